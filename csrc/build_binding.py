"""cffi API-mode builder for pybpfnet._libbpf (build time only, not in the wheel).

Declares the part of libbpf's API pybpfnet uses plus the C glue in
csrc/glue. Option structs are declared partially (``...;``) so the C compiler
fills in their real layout from the system headers.
"""

import os
import shlex
import subprocess
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
MIN_LIBBPF = (1, 1)

CDEF = r"""
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;
typedef long long __s64;

struct bpf_object;
struct bpf_program;
struct bpf_map;
struct btf;

struct bpf_object_open_opts {
    size_t sz;
    const char *object_name;
    const char *pin_root_path;
    const char *btf_custom_path;
    ...;
};

struct bpf_map_create_opts {
    size_t sz;
    __u32 btf_fd;
    __u32 btf_key_type_id;
    __u32 btf_value_type_id;
    __u32 inner_map_fd;
    __u32 map_flags;
    __u64 map_extra;
    __u32 numa_node;
    __u32 map_ifindex;
    ...;
};

struct bpf_map_batch_opts {
    size_t sz;
    __u64 elem_flags;
    __u64 flags;
    ...;
};

struct bpf_test_run_opts {
    size_t sz;
    const void *data_in;
    void *data_out;
    __u32 data_size_in;
    __u32 data_size_out;
    const void *ctx_in;
    void *ctx_out;
    __u32 ctx_size_in;
    __u32 ctx_size_out;
    __u32 retval;
    int repeat;
    __u32 duration;
    __u32 flags;
    __u32 cpu;
    __u32 batch_size;
    ...;
};

struct bpf_prog_info {
    __u32 type;
    __u32 id;
    __u8 tag[8];
    __u32 jited_prog_len;
    __u32 xlated_prog_len;
    __u64 load_time;
    __u32 created_by_uid;
    __u32 nr_map_ids;
    __u64 map_ids;
    char name[16];
    __u32 ifindex;
    __u32 btf_id;
    __u64 run_time_ns;
    __u64 run_cnt;
    __u64 recursion_misses;
    ...;
};

struct bpf_map_info {
    __u32 type;
    __u32 id;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 map_flags;
    char name[16];
    __u32 ifindex;
    __u32 btf_id;
    __u32 btf_key_type_id;
    __u32 btf_value_type_id;
    __u64 map_extra;
    ...;
};

struct bpf_link_info {
    __u32 type;
    __u32 id;
    __u32 prog_id;
    ...;
};

/* objects */
struct bpf_object *bpf_object__open_mem(const void *obj_buf, size_t obj_buf_sz,
                                        const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
const char *bpf_object__name(const struct bpf_object *obj);
struct btf *bpf_object__btf(const struct bpf_object *obj);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);

/* programs */
const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
bool bpf_program__autoload(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
size_t bpf_program__insn_cnt(const struct bpf_program *prog);
int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__type(const struct bpf_program *prog);
int bpf_program__set_type(struct bpf_program *prog, int type);
int bpf_program__expected_attach_type(const struct bpf_program *prog);
int bpf_program__set_expected_attach_type(struct bpf_program *prog, int type);
void bpf_program__set_ifindex(struct bpf_program *prog, __u32 ifindex);
int bpf_program__set_flags(struct bpf_program *prog, __u32 flags);

/* maps of an object */
int bpf_map__fd(const struct bpf_map *map);
const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__type(const struct bpf_map *map);
__u32 bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
__u32 bpf_map__map_flags(const struct bpf_map *map);
int bpf_map__set_map_flags(struct bpf_map *map, __u32 flags);
__u32 bpf_map__key_size(const struct bpf_map *map);
__u32 bpf_map__value_size(const struct bpf_map *map);
__u32 bpf_map__btf_key_type_id(const struct bpf_map *map);
__u32 bpf_map__btf_value_type_id(const struct bpf_map *map);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);
void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
bool bpf_map__is_internal(const struct bpf_map *map);
int bpf_map__set_autocreate(struct bpf_map *map, bool autocreate);
struct bpf_map *bpf_map__inner_map(struct bpf_map *map);
int bpf_map__reuse_fd(struct bpf_map *map, int fd);

/* BTF */
struct btf *btf__new(const void *data, __u32 size);
struct btf *btf__load_from_kernel_by_id(__u32 id);
const void *btf__raw_data(const struct btf *btf, __u32 *size);
void btf__free(struct btf *btf);
int btf__fd(const struct btf *btf);

/* raw syscall wrappers */
int bpf_map_create(int map_type, const char *map_name, __u32 key_size,
                   __u32 value_size, __u32 max_entries,
                   const struct bpf_map_create_opts *opts);
int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_lookup_elem_flags(int fd, const void *key, void *value, __u64 flags);
int bpf_map_lookup_and_delete_elem(int fd, const void *key, void *value);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_map_freeze(int fd);
int bpf_map_delete_batch(int fd, const void *keys, __u32 *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys,
                         void *values, __u32 *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_map_lookup_and_delete_batch(int fd, void *in_batch, void *out_batch,
                                    void *keys, void *values, __u32 *count,
                                    const struct bpf_map_batch_opts *opts);
int bpf_map_update_batch(int fd, const void *keys, const void *values,
                         __u32 *count, const struct bpf_map_batch_opts *opts);
int bpf_obj_pin(int fd, const char *pathname);
int bpf_obj_get(const char *pathname);
int bpf_prog_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_map_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_link_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_prog_get_fd_by_id(__u32 id);
int bpf_map_get_fd_by_id(__u32 id);
int bpf_btf_get_fd_by_id(__u32 id);
int bpf_link_get_fd_by_id(__u32 id);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len);
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);

int libbpf_num_possible_cpus(void);
int libbpf_major_version(void);
int libbpf_minor_version(void);
int libbpf_strerror(int err, char *buf, size_t size);

/* glue (csrc/glue/pybn.h) */
extern "Python+C" void _pybn_log(int level, const char *msg);
void pybn_log_install(void);
void pybn_log_debug(int enabled);
struct pybn_ringbuf;
struct pybn_ringbuf *pybn_ringbuf_open(int map_fd, uint32_t ring_size);
void pybn_ringbuf_close(struct pybn_ringbuf *rb);
long pybn_ringbuf_consume(struct pybn_ringbuf *rb, char *out, size_t outsz,
                          uint32_t rec_size, size_t *used, uint64_t *mismatch);
uint64_t pybn_ringbuf_avail(struct pybn_ringbuf *rb);
long pybn_map_keys(int fd, uint32_t key_size, char *out, uint32_t max);
int pybn_link_create_raw(int prog_fd, int target_fd, uint32_t attach_type,
                         uint32_t flags, uint32_t relative_fd_or_id,
                         uint64_t expected_revision);

const char *pybn_build_version(void);
int pybn_last_err(void);
uint64_t pybn_lookup_int(int fd, uint64_t key, uint32_t key_size, uint32_t value_size);
int pybn_update_int(int fd, uint64_t key, uint32_t key_size, uint64_t value,
                    uint32_t value_size, uint64_t flags);
int pybn_delete_int(int fd, uint64_t key, uint32_t key_size);

/* ---- attach (issue 3) ---- */
struct bpf_link_create_opts {
    size_t sz;
    __u32 flags;
    __u32 target_btf_id;
    ...;
};
int bpf_link_create(int prog_fd, int target_fd, int attach_type,
                    const struct bpf_link_create_opts *opts);
int bpf_link_detach(int link_fd);
struct bpf_link_update_opts {
    size_t sz;
    __u32 flags;
    __u32 old_prog_fd;
    ...;
};
int bpf_link_update(int link_fd, int new_prog_fd,
                    const struct bpf_link_update_opts *opts);
int bpf_raw_tracepoint_open(const char *name, int prog_fd);
int bpf_prog_query(int target_fd, int type, __u32 query_flags,
                   __u32 *attach_flags, __u32 *prog_ids, __u32 *prog_cnt);

struct bpf_xdp_attach_opts {
    size_t sz;
    int old_prog_fd;
    ...;
};
struct bpf_xdp_query_opts {
    size_t sz;
    __u32 prog_id;
    __u32 drv_prog_id;
    __u32 hw_prog_id;
    __u32 skb_prog_id;
    __u8 attach_mode;
    ...;
};
int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags,
                   const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_query(int ifindex, int flags, struct bpf_xdp_query_opts *opts);

enum bpf_tc_attach_point {
    BPF_TC_INGRESS = 1,
    BPF_TC_EGRESS = 2,
    BPF_TC_CUSTOM = 4,
};
struct bpf_tc_hook {
    size_t sz;
    int ifindex;
    enum bpf_tc_attach_point attach_point;
    __u32 parent;
    ...;
};
struct bpf_tc_opts {
    size_t sz;
    int prog_fd;
    __u32 flags;
    __u32 prog_id;
    __u32 handle;
    __u32 priority;
    ...;
};
int bpf_tc_hook_create(struct bpf_tc_hook *hook);
int bpf_tc_hook_destroy(struct bpf_tc_hook *hook);
int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
int bpf_tc_detach(const struct bpf_tc_hook *hook, const struct bpf_tc_opts *opts);
int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);

int pybn_perf_tracepoint_open(uint64_t tp_id);
int pybn_prog_query_raw(uint32_t target, uint32_t attach_type,
                        uint32_t query_flags, uint32_t *attach_flags,
                        uint32_t *prog_ids, uint32_t *link_ids,
                        uint32_t *count, uint64_t *revision);
int pybn_setns(int fd, int nstype);

/* ---- Maglev (issue 6, csrc/glue/pybn_maglev.c) ---- */
uint64_t pybn_maglev_hash(const char *data, size_t len, uint64_t basis);
int pybn_maglev_permutations(const char *names, size_t len,
                             const uint32_t *ends, uint32_t n, uint32_t m,
                             uint32_t *offsets, uint32_t *skips);
long pybn_maglev_fill(const uint32_t *offsets, const uint32_t *skips,
                      const uint32_t *weights, uint32_t n, uint32_t m,
                      int32_t *table);
"""


def _fail(msg):
    sys.stderr.write("\npybpfnet build error: %s\n\n" % msg)
    raise SystemExit(1)


def _pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], check=True,
                             capture_output=True, text=True).stdout
    except FileNotFoundError:
        _fail("pkg-config not found: install the Debian package 'pkg-config' "
              "(apt-get install pkg-config)")
    except subprocess.CalledProcessError:
        _fail("libbpf >= %d.%d not found by pkg-config: install the Debian "
              "package 'libbpf-dev' (apt-get install libbpf-dev libelf-dev "
              "zlib1g-dev)" % MIN_LIBBPF)
    return out.strip()


def _libbpf_flags():
    version = _pkg_config("--modversion", "libbpf")
    parts = tuple(int(p) for p in version.split(".")[:2])
    if parts < MIN_LIBBPF:
        _fail("libbpf %s is too old; pybpfnet needs >= %d.%d (Debian 12: "
              "libbpf-dev 1.1; bookworm-backports has 1.4)" % ((version,) + MIN_LIBBPF))
    cflags = shlex.split(_pkg_config("--cflags", "libbpf"))
    libs = shlex.split(_pkg_config("--libs", "libbpf"))
    return version, cflags, libs


def _version():
    ns = {}
    with open(os.path.join(HERE, "..", "src", "pybpfnet", "_version.py")) as f:
        exec(f.read(), ns)
    return ns["__version__"]


def make_ffi():
    libbpf_version, cflags, libs = _libbpf_flags()
    ffi = FFI()
    ffi.cdef(CDEF)
    glue = os.path.relpath(os.path.join(HERE, "glue"))
    include_dirs = [glue] + [f[2:] for f in cflags if f.startswith("-I")]
    ffi.set_source(
        "pybpfnet._libbpf",
        '#include <stdbool.h>\n#include <bpf/libbpf.h>\n#include <bpf/bpf.h>\n'
        '#include <bpf/btf.h>\n#include "pybn.h"\n'
        'static const char *pybn_build_version(void) { return "%s"; }\n' % _version(),
        sources=[os.path.join(glue, "pybn.c"),
                 os.path.join(glue, "pybn_maglev.c")],
        include_dirs=include_dirs,
        libraries=[f[2:] for f in libs if f.startswith("-l")],
        library_dirs=[f[2:] for f in libs if f.startswith("-L")],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
    )
    return ffi


ffibuilder = make_ffi()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

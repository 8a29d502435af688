"""A self-contained HTML report of flow records: who talks to whom (an SVG
graph laid out here, in Python), the top flows, latency histograms as SVG
bar charts, and DNS/HTTP tables. One file, inline CSS/SVG/JS, no URL of any
kind, so it opens offline and fetches nothing."""

import html
import math
import time

from pybpfnet.dataplanes._flow_hist import Log2Histogram, slot
from pybpfnet.dataplanes._tc_monitor import endpoint, protocol_name
from pybpfnet.dataplanes.flowmon import TCP_FLAGS

__all__ = ["render_report", "graph_layout", "latency_histogram", "human_bytes"]


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2330;
background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5a6477;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:20px}.card span{color:#5a6477;font-size:12px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:left}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
svg{background:#fff;border:1px solid #dde2ea;border-radius:6px}
.edge{stroke:#7d8ca3;stroke-opacity:.75}.edge.hl{stroke:#d9480f;stroke-opacity:1}
.node circle{fill:#3b6fd4;stroke:#fff;stroke-width:2}.node.hl circle{fill:#d9480f}
.node text{font-size:12px;fill:#1d2330}.elabel{font-size:10px;fill:#5a6477}
.bar{fill:#3b6fd4}.axis{font-size:10px;fill:#5a6477}.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}figcaption{font-size:13px;margin-bottom:4px}
.empty{color:#5a6477;font-style:italic}
"""

# hover a node: its edges and neighbours light up; the last line marks the
# document as scripted (a check that the script ran without error)
_JS = """
(function(){
 var svg=document.getElementById('graph');
 if(svg){
  svg.querySelectorAll('.node').forEach(function(n){
   n.addEventListener('mouseenter',function(){
    var id=n.getAttribute('data-id');
    svg.querySelectorAll('.edge').forEach(function(e){
     if(e.getAttribute('data-a')===id||e.getAttribute('data-b')===id){
      e.classList.add('hl');
      svg.querySelectorAll('.node').forEach(function(m){
       var mid=m.getAttribute('data-id');
       if(mid===e.getAttribute('data-a')||mid===e.getAttribute('data-b'))m.classList.add('hl');
      });
     }
    });
   });
   n.addEventListener('mouseleave',function(){
    svg.querySelectorAll('.hl').forEach(function(e){e.classList.remove('hl');});
   });
  });
 }
 document.documentElement.setAttribute('data-js','ok');
})();
"""


def _e(text):
    return html.escape(str(text), quote=True)


def human_bytes(n):
    """1536 -> "1.5 KiB" (binary units up to TiB)."""
    n = float(n)
    if abs(n) < 1024:
        return "%d B" % n
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if abs(n) < 1024:
            return "%.1f %s" % (n, unit)
    return "%.1f TiB" % (n / 1024)


def _fmt_us(us):
    if us >= 1_000_000:
        return "%gs" % (us / 1e6)
    if us >= 1000:
        return "%gms" % (us / 1e3)
    return "%dus" % us


def latency_histogram(latencies_ns):
    """A Log2Histogram (microseconds) of nanosecond latencies (None skipped),
    bucketed as the BPF side buckets handshake RTTs."""
    counts = [0] * 64
    for ns in latencies_ns:
        if ns is not None:
            counts[min(63, slot(int(ns) // 1000))] += 1
    return Log2Histogram(tuple(counts), "usecs")


def _endpoint(addr, name):
    return str(name) if name else str(addr)


def _graph_data(records, max_nodes):
    """(nodes, edges): nodes {id: bytes}, edges {(a, b): [bytes a->b, bytes
    b->a, packets]} with a < b; beyond ``max_nodes`` endpoints the least
    busy merge into "other"."""
    pairs = {}
    for r in records:
        a = _endpoint(r.src, getattr(r, "src_name", None))
        b = _endpoint(r.dst, getattr(r, "dst_name", None))
        bts, pk = pairs.get((a, b), (0, 0))
        pairs[(a, b)] = (bts + r.bytes, pk + r.packets)
    weight = {}
    for (a, b), (bts, _) in pairs.items():
        weight[a] = weight.get(a, 0) + bts
        weight[b] = weight.get(b, 0) + bts
    keep = sorted(weight, key=lambda k: (-weight[k], k))
    if len(keep) > max_nodes:
        keep = set(keep[:max_nodes - 1])
        merge = "other"
    else:
        keep, merge = set(keep), None
    nodes, edges = {}, {}
    for (a, b), (bts, pk) in pairs.items():
        a = a if a in keep else merge
        b = b if b in keep else merge
        nodes[a] = nodes.get(a, 0) + bts
        nodes[b] = nodes.get(b, 0) + bts
        if a == b:
            continue
        key = (a, b) if a < b else (b, a)
        e = edges.setdefault(key, [0, 0, 0])
        e[0 if key == (a, b) else 1] += bts
        e[2] += pk
    return nodes, edges


def graph_layout(nodes, width=760, height=520, margin=110):
    """{node: (x, y)}: nodes on a circle, busiest first, clockwise from the
    top (one node: the centre). Deterministic."""
    order = sorted(nodes, key=lambda k: (-nodes[k], k))
    cx, cy = width / 2, height / 2
    if len(order) == 1:
        return {order[0]: (cx, cy)}
    rx, ry = width / 2 - margin, height / 2 - margin / 2
    out = {}
    for i, n in enumerate(order):
        ang = -math.pi / 2 + 2 * math.pi * i / len(order)
        out[n] = (cx + rx * math.cos(ang), cy + ry * math.sin(ang))
    return out


def _graph_svg(records, max_nodes=24, width=760, height=520):
    nodes, edges = _graph_data(records, max_nodes)
    if not nodes:
        return '<p class="empty">No flows.</p>'
    pos = graph_layout(nodes, width, height)
    top_edge = max((e[0] + e[1] for e in edges.values()), default=1) or 1
    top_node = max(nodes.values()) or 1
    ids = {n: "n%d" % i for i, n in enumerate(sorted(nodes))}
    out = ['<svg id="graph" width="%d" height="%d" viewBox="0 0 %d %d" role="img" '
           'aria-label="who talks to whom">' % (width, height, width, height)]
    for (a, b), (ab, ba, pk) in sorted(edges.items()):
        (x1, y1), (x2, y2) = pos[a], pos[b]
        total = ab + ba
        w = 1.5 + 8 * math.log1p(total) / math.log1p(top_edge)
        out.append('<line class="edge" data-a="%s" data-b="%s" data-src="%s" data-dst="%s" '
                   'data-bytes="%d" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" '
                   'stroke-width="%.1f"><title>%s &#8594; %s: %s\n%s &#8594; %s: %s\n'
                   '%d packets</title></line>'
                   % (ids[a], ids[b], _e(a), _e(b), total, x1, y1, x2, y2, w, _e(a), _e(b),
                      human_bytes(ab), _e(b), _e(a), human_bytes(ba), pk))
        out.append('<text class="elabel" x="%.1f" y="%.1f" text-anchor="middle">%s</text>'
                   % ((x1 + x2) / 2, (y1 + y2) / 2 - 4, human_bytes(total)))
    cx, cy = width / 2, height / 2
    for n in sorted(nodes, key=lambda k: (-nodes[k], k)):
        x, y = pos[n]
        r = 7 + 13 * math.sqrt(nodes[n] / top_node)
        dx, dy = x - cx, y - cy
        norm = math.hypot(dx, dy) or 1.0
        tx, ty = x + dx / norm * (r + 6), y + dy / norm * (r + 6) + 4
        if not dx and not dy:
            tx, ty = x, y - r - 6
        anchor = "middle" if abs(dx) < 1 else ("start" if dx > 0 else "end")
        out.append('<g class="node" data-id="%s" data-label="%s" data-bytes="%d">'
                   '<title>%s: %s</title><circle cx="%.1f" cy="%.1f" r="%.1f"/>'
                   '<text x="%.1f" y="%.1f" text-anchor="%s">%s</text></g>'
                   % (ids[n], _e(n), nodes[n], _e(n), human_bytes(nodes[n]), x, y, r, tx, ty,
                      anchor, _e(n)))
    out.append("</svg>")
    return "\n".join(out)


def _histogram_svg(name, hist, width=420, height=220):
    rows = hist.buckets()
    if not rows:
        return ('<figure class="histogram" data-name="%s" data-total="0"><figcaption>%s'
                '</figcaption><p class="empty">No samples.</p></figure>' % (_e(name), _e(name)))
    left, bottom, top = 40, 46, 18
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(c for _, _, c in rows) or 1
    bw = plot_w / len(rows)
    out = ['<figure class="histogram" data-name="%s" data-total="%d"><figcaption>%s '
           '(%d samples)</figcaption>' % (_e(name), hist.total, _e(name), hist.total),
           '<svg width="%d" height="%d" viewBox="0 0 %d %d">' % (width, height, width, height),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#9aa5b5"/>'
           % (left, top + plot_h, left + plot_w, top + plot_h),
           '<text class="axis" x="%d" y="%d" text-anchor="end">%d</text>'
           % (left - 4, top + 8, peak)]
    unit_us = hist.unit == "usecs"
    for i, (lo, hi, count) in enumerate(rows):
        h = plot_h * count / peak
        x = left + i * bw
        label = "%s-%s" % (_fmt_us(lo), _fmt_us(hi)) if unit_us else "%d-%d" % (lo, hi)
        out.append('<rect class="bar" data-low="%d" data-high="%d" data-count="%d" '
                   'x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s %s: %d</title></rect>'
                   % (lo, hi, count, x + 1, top + plot_h - h, max(bw - 2, 1), h, label,
                      _e(hist.unit), count))
        if count:
            out.append('<text class="axis" x="%.1f" y="%.1f" text-anchor="middle">%d</text>'
                       % (x + bw / 2, top + plot_h - h - 3, count))
        out.append('<text class="axis" transform="translate(%.1f,%.1f) rotate(-45)" '
                   'text-anchor="end">%s</text>' % (x + bw / 2 + 3, top + plot_h + 10,
                                                    _e(_fmt_us(hi + 1) if unit_us else hi)))
    out.append("</svg></figure>")
    return "\n".join(out)


def _merge(records):
    out = {}
    for r in records:
        k = r.key
        if k in out:
            m = out[k]
            out[k] = (m[0].merge(r), m[1] | {r.reason})
        else:
            out[k] = (r, {r.reason})
    return list(out.values())


def _flag_names(bits):
    return ",".join(n for n, b in TCP_FLAGS if bits & b)


def _table(headers, rows, cls):
    if not rows:
        return '<p class="empty">None.</p>'
    out = ['<table class="%s"><thead><tr>%s</tr></thead><tbody>'
           % (cls, "".join("<th>%s</th>" % _e(h) for h in headers))]
    for row in rows:
        cells = []
        for v in row:
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append('<td class="num">%s</td>' % _e(v) if num else "<td>%s</td>" % _e(v))
        out.append("<tr>%s</tr>" % "".join(cells))
    out.append("</tbody></table>")
    return "\n".join(out)


def _median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def _ms(ns):
    return "" if ns is None else "%.3f" % (ns / 1e6)


def render_report(records, histograms=None, dns=(), http=(), title="pybpfnet flow report",
                  top=50, max_nodes=24):
    """The HTML text of a self-contained report of FlowRecords: summary,
    a who-talks-to-whom graph (endpoints by workload name when records
    carry one, else address; edges weighted by bytes both ways), the
    ``top`` flows by bytes (records of one flow merged), ``histograms``
    ({caption: Log2Histogram}, e.g. the monitor's ``rtt_histogram()``) and
    the latencies of ``dns``/``http`` records as bar charts, and DNS/HTTP
    tables. Pure function: no kernel, no I/O. Graph endpoints beyond
    ``max_nodes`` merge into "other"."""
    records = list(records)
    dns, http = list(dns), list(http)
    hists = dict(histograms or {})
    if dns:
        hists.setdefault("DNS latency", latency_histogram(d.latency_ns for d in dns))
    if http:
        hists.setdefault("HTTP latency", latency_histogram(h.latency_ns for h in http))
    merged = sorted(_merge(records), key=lambda m: (-m[0].bytes, str(m[0].key)))
    packets = sum(r.packets for r in records)
    nbytes = sum(r.bytes for r in records)
    drops = sum(r.drops for r in records)
    starts = [r.start for r in records if r.start]
    ends = [r.end for r in records if r.end]
    span = (max(ends) - min(starts)) if starts and ends else 0.0
    cards = [("flows", len(merged)), ("records", len(records)), ("packets", packets),
             ("bytes", human_bytes(nbytes)), ("drops", drops), ("span", "%.1f s" % span)]
    if dns:
        cards.append(("DNS queries", len(dns)))
    if http:
        cards.append(("HTTP requests", len(http)))
    flow_rows = []
    for r, reasons in merged[:top]:
        flow_rows.append((r.interface or r.ifindex, r.direction,
                          protocol_name(r.protocol),
                          endpoint(r.src, r.sport, getattr(r, "src_name", None)),
                          endpoint(r.dst, r.dport, getattr(r, "dst_name", None)),
                          r.packets, r.bytes, human_bytes(r.bytes), _flag_names(r.tcp_flags),
                          _ms(r.rtt_ns), r.drops,
                          ",".join(sorted(str(x) for x in reasons if x)) or "live"))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>%s</title>" % _e(title), "<style>%s</style></head><body>" % _CSS,
             "<h1>%s</h1>" % _e(title),
             '<p class="meta">generated %s by pybpfnet</p>'
             % _e(time.strftime("%Y-%m-%d %H:%M:%S %Z")),
             '<div class="cards">%s</div>' % "".join(
                 '<div class="card" data-name="%s"><b>%s</b><span>%s</span></div>'
                 % (_e(k), _e(v), _e(k)) for k, v in cards),
             "<h2>Who talks to whom</h2>", _graph_svg(records, max_nodes),
             "<h2>Top flows by bytes</h2>",
             _table(("interface", "dir", "proto", "source", "destination", "packets", "bytes",
                     "", "TCP flags", "RTT ms", "drops", "exported"), flow_rows, "flows")]
    parts.append("<h2>Latency histograms</h2>")
    if hists:
        parts.append('<div class="charts">%s</div>'
                     % "\n".join(_histogram_svg(k, v) for k, v in hists.items()))
    else:
        parts.append('<p class="empty">None.</p>')
    if dns:
        groups = {}
        for d in dns:
            groups.setdefault((d.qname, d.qtype, d.rcode or "no response"), []).append(d)
        rows = [(q, t, rc, len(v), sum(len(x.answers or ()) for x in v),
                 _ms(_median(x.latency_ns for x in v)))
                for (q, t, rc), v in sorted(groups.items(), key=lambda kv: (-len(kv[1]),
                                                                            str(kv[0])))]
        parts += ["<h2>DNS</h2>", _table(("name", "type", "rcode", "queries", "answers",
                                          "median ms"), rows[:top], "dns")]
    if http:
        groups = {}
        for h in http:
            key = (h.protocol, h.method, h.host or "", h.path,
                   "" if h.status is None else h.status)
            groups.setdefault(key, []).append(h)
        rows = [k + (len(v), _ms(_median(x.latency_ns for x in v)))
                for k, v in sorted(groups.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))]
        parts += ["<h2>HTTP</h2>", _table(("protocol", "method", "host", "path", "status",
                                           "requests", "median ms"), rows[:top], "http")]
    parts += ["<script>%s</script>" % _JS, "</body></html>", ""]
    return "\n".join(parts)

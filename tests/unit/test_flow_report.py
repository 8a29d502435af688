"""The HTML flow report as data: parsed back with html.parser, the graph's
nodes/edges, tables and histogram bars checked against the records."""

import html.parser
import re

import attrs

from pybpfnet.dataplanes._flow_hist import Log2Histogram
from pybpfnet.dataplanes._flow_report import (
    graph_layout, human_bytes, latency_histogram, render_report)
from pybpfnet.dataplanes.flowmon import FlowRecord


def rec(src, dst, bytes, sport=40000, dport=80, packets=1, **kw):
    return FlowRecord(src=src, dst=dst, sport=sport, dport=dport, protocol=6, ifindex=2,
                      direction="egress", packets=packets, bytes=bytes, tcp_flags=0x12,
                      first_ns=1, last_ns=2, reason="fin", interface="eth0", start=10.0,
                      end=11.5, **kw)


class Elements(html.parser.HTMLParser):
    """Every start tag as (tag, attrs dict), and the text of the page."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag, cls):
        return [a for t, a in self.tags if t == tag and cls in (a.get("class") or "").split()]


def test_graph_nodes_edges_and_tables():
    records = [rec("10.0.0.1", "10.0.0.2", 5000, packets=5),
               rec("10.0.0.2", "10.0.0.1", 700, sport=80, dport=40000, packets=3),
               rec("10.0.0.1", "10.0.0.3", 100)]
    page = render_report(records, histograms={"TCP handshake RTT":
                                              Log2Histogram([0, 0, 1, 0, 4, 2])},
                         title="lab <report>")
    el = Elements(page)
    nodes = {a["data-label"]: int(a["data-bytes"]) for a in el.find("g", "node")}
    assert nodes == {"10.0.0.1": 5800, "10.0.0.2": 5700, "10.0.0.3": 100}
    edges = {(a["data-src"], a["data-dst"]): int(a["data-bytes"]) for a in el.find("line", "edge")}
    assert edges == {("10.0.0.1", "10.0.0.2"): 5700, ("10.0.0.1", "10.0.0.3"): 100}
    bars = [(int(a["data-low"]), int(a["data-high"]), int(a["data-count"]))
            for a in el.find("rect", "bar")]
    assert bars == [(0, 1, 0), (2, 3, 1), (4, 7, 0), (8, 15, 4), (16, 31, 2)]
    (fig,) = [a for t, a in el.tags if t == "figure"]
    assert fig["data-total"] == "7" and fig["data-name"] == "TCP handshake RTT"
    text = "".join(el.text)
    assert "lab <report>" in text and "<title>lab &lt;report&gt;</title>" in page
    # top flows: biggest first, both endpoints with ports
    rows = re.findall(r"<tr><td>eth0</td>.*?</tr>", page)
    assert len(rows) == 3 and "10.0.0.1:40000" in rows[0] and "5000" in rows[0]
    cards = {a["data-name"] for a in el.find("div", "card")}
    assert {"flows", "packets", "bytes", "drops"} <= cards


def test_self_contained_and_escaped():
    evil = '<img src="https://x.invalid/a.png">'
    records = [rec("10.0.0.1", "10.0.0.2", 10)]
    records.append(attrs.evolve(records[0], src_name=evil))
    page = render_report(records, title=evil)
    el = Elements(page)
    assert not [t for t, a in el.tags if t == "img"]
    assert not [a for t, a in el.tags if "src" in a or "href" in a]
    assert "url(" not in page and "@import" not in page and "<link" not in page
    assert "&lt;img src=&quot;https://x.invalid/a.png&quot;&gt;" in page    # text, escaped
    # the name, escaped, as the graph shows it
    assert 'data-label="&lt;img src=&quot;https://x.invalid/a.png&quot;&gt;"' in page


def test_many_endpoints_merge_into_other():
    records = [rec("10.0.0.1", "10.0.1.%d" % i, 1000 - i) for i in range(40)]
    el = Elements(render_report(records, max_nodes=10))
    labels = [a["data-label"] for a in el.find("g", "node")]
    assert len(labels) == 10 and "other" in labels and labels[0] == "10.0.0.1"
    total = sum(r.bytes for r in records)
    assert sum(int(a["data-bytes"]) for a in el.find("line", "edge")) == total


def test_dns_http_sections_and_latency_histograms():
    @attrs.frozen
    class D:
        qname: str
        qtype: str
        rcode: object
        answers: tuple
        latency_ns: object

    @attrs.frozen
    class H:
        protocol: str
        method: str
        host: str
        path: str
        status: object
        latency_ns: object

    dns = [D("a.example", "A", "NOERROR", ("192.0.2.1",), 300_000),
           D("a.example", "A", "NOERROR", ("192.0.2.1",), 500_000),
           D("b.example", "AAAA", None, (), None)]
    http = [H("HTTP/1.1", "GET", "h", "/", 200, 2_000_000)]
    el = Elements(render_report([], dns=dns, http=http))
    figs = {a["data-name"]: int(a["data-total"]) for t, a in el.tags if t == "figure"}
    assert figs == {"DNS latency": 2, "HTTP latency": 1}
    assert el.find("table", "dns") and el.find("table", "http")
    assert not el.find("g", "node")          # no flows: no graph


def test_helpers():
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(12) == "12 B"
    h = latency_histogram([999, 1000, 3_000_000, None])
    assert h.counts[0] == 1 and h.counts[1] == 1 and h.counts[12] == 1 and h.total == 3
    pos = graph_layout({"a": 3, "b": 2, "c": 1}, width=400, height=400, margin=100)
    assert pos["a"] == (200.0, 50.0)          # busiest on top
    assert len({(round(x), round(y)) for x, y in pos.values()}) == 3

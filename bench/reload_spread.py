#!/usr/bin/env python3
"""The spread of LL-HLS blocking reload answers as the server sent them, from a capture.

`ferrolive bench --llhls N` measures the spread where its players read the answers, so its
figure includes the bench's own scheduling (one thread reading N answers and N parts per
part). This reads the times the answers passed the loopback device instead, which is when
the server wrote them: for each (_HLS_msn, _HLS_part), each 200 playlist answer's time
minus the earliest one's, for requests sent before that earliest answer (as the bench
counts). It also says how many part responses the server sent between a part's first and
last reload answer, that is, how much of the parts' traffic the later answers waited behind.

Capture (root) while the bench runs, HTTP-PORT being the server's player port:

    off='((tcp[12:1]&0xf0)>>2)'
    tcpdump -i lo -s 400 -B 262144 -w cap.pcap "tcp and ((src port HTTP-PORT and \
        tcp[$off:4] = 0x48545450) or (dst port HTTP-PORT and tcp[$off:4] = 0x47455420))"

(responses starting "HTTP" and requests starting "GET ", first 400 bytes), then:

    bench/reload_spread.py cap.pcap

Assumes IPv4 on Linux's loopback (Ethernet framing) and one request at a time per
connection, as the bench's players do.
"""

import bisect
import collections
import re
import struct
import sys


def packets(path):
    """(time in s, source port, destination port, TCP payload) of each captured packet."""
    with open(path, "rb") as f:
        magic = struct.unpack("<I", f.read(24)[:4])[0]
        scale = 1e9 if magic == 0xA1B23C4D else 1e6
        while True:
            head = f.read(16)
            if len(head) < 16:
                return
            sec, frac, incl, _ = struct.unpack("<IIII", head)
            data = f.read(incl)
            ip = data[14:]
            tcp = ip[(ip[0] & 15) * 4 :]
            sport, dport = struct.unpack(">HH", tcp[:4])
            yield sec + frac / scale, sport, dport, tcp[(tcp[12] >> 4) * 4 :]


def main(path):
    pending = {}  # client port -> ((msn, part), time sent) of its reload in flight
    answers = collections.defaultdict(list)  # (msn, part) -> [(sent, answered)]
    part_times = []
    for t, sport, dport, payload in packets(path):
        if payload.startswith(b"GET "):
            m = re.search(rb"_HLS_msn=(\d+)&_HLS_part=(\d+)", payload)
            pending[sport] = ((int(m[1]), int(m[2])), t) if m else None
        elif payload.startswith(b"HTTP/1.1 200"):
            request = pending.pop(dport, None)
            head = payload.lower()
            if request and b"mpegurl" in head:
                key, sent = request
                answers[key].append((sent, t))
            elif b"iso.segment" in head:
                part_times.append(t)
    spread, spans, between = [], [], []
    part_times.sort()
    for got in answers.values():
        earliest = min(a for _, a in got)
        spread += [a - earliest for s, a in got if s <= earliest]
        last = max(a for _, a in got)
        spans.append(last - earliest)
        lo = bisect.bisect_left(part_times, earliest)
        between.append(bisect.bisect_right(part_times, last) - lo)
    if not spread:
        sys.exit("no blocking reload answered in this capture")
    spread.sort()
    spans.sort()
    between.sort()

    def q(values, p, scale=1000):
        return values[min(len(values) - 1, int(p * len(values)))] * scale

    print(
        f"{len(answers)} parts, {len(spread)} answers: spread p50/p99/max "
        f"{q(spread, .5):.1f}/{q(spread, .99):.1f}/{spread[-1] * 1000:.1f} ms; "
        f"first to last answer of a part, median/max {q(spans, .5):.1f}/{spans[-1] * 1000:.1f} ms; "
        f"part responses sent in between, median/max {q(between, .5, 1):.0f}/{between[-1]}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

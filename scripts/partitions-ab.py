#!/usr/bin/env python3
"""Two broker builds side by side over the partition count (issue 18): for each round, each
partition count and each build (the order alternating by round), a fresh broker with empty
data, the dirty page cache written back first, then sluice-bench produces the same messages
over that many partitions and consumes them back. Prints progress on stderr and writes
results.csv (every run), results.md (medians, ranges, new/old ratios) and throughput.svg.

    scripts/partitions-ab.py --old OLD_SLUICE --new NEW_SLUICE [--rounds 3]
        [--partitions 1,16,256,2048,8192] [--messages 500000] [--out DIR]

Port 19710 must be free. Build this checkout first (cargo build --release -p sluice-broker
-p sluice-bench): its sluice-bench and its `sluice topic` are the clients of both builds.
"""
import argparse
import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

LISTENER = "127.0.0.1:19710"
BENCH = "target/release/sluice-bench"
# The operator CLI of this checkout, which creates the topics for both builds.
SLUICE = "target/release/sluice"


def say(text):
    print(f"partitions-ab: {text}", file=sys.stderr, flush=True)


def listening(address, deadline):
    host, port = address.rsplit(":", 1)
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def start(binary, data):
    command = [binary, "serve", "--log", "warn",
               "--override", f"listeners=PLAINTEXT://{LISTENER}",
               "--override", f"log.dirs={data}",
               "--override", "sluice.metrics.address="]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    if not listening(LISTENER, time.monotonic() + 60):
        child.kill()
        raise SystemExit(f"{binary} did not listen on {LISTENER}")
    return child


def bench(args):
    out = subprocess.run([BENCH, *args, "--bootstrap", LISTENER, "--json"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def create_and_wait(topic, partitions):
    """Creates the topic with the operator CLI and waits until every partition answers
    ListOffsets at its leader, so that the timed produce starts on a topic that is whole
    (sluice-bench does not retry NOT_LEADER_OR_FOLLOWER)."""
    subprocess.run([SLUICE, "topic", "create", topic, "--partitions", str(partitions),
                    "--bootstrap-server", LISTENER], check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = subprocess.run([SLUICE, "topic", "describe", topic, "--json",
                               "--bootstrap-server", LISTENER],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if done.returncode == 0:
            found = json.loads(done.stdout)["topics"][0]["partitions"]
            if len(found) == partitions and all(p["error"] is None for p in found):
                return
        time.sleep(0.5)
    raise SystemExit(f"{topic}: not every partition answered within 120 s")


def mb_per_s(summary):
    """Record batches' MB/s, which both sides report (a consumer does not unpack payloads)."""
    return float(summary["batch_mb_per_s"])


def one_run(binary, partitions, messages):
    data = tempfile.mkdtemp(prefix="sluice-partitions-")
    subprocess.run(["sync"], check=True)
    child = start(binary, data)
    try:
        topic = f"p{partitions}"
        create_and_wait(topic, partitions)
        produced = bench(["produce", "--topic", topic, "--partitions", str(partitions),
                          "--message-size", "1024", "--messages", str(messages),
                          "--batch-size", "64KiB", "--acks", "1"])
        consumed = bench(["consume", "--topic", topic])
        return mb_per_s(produced), mb_per_s(consumed)
    finally:
        child.terminate()
        child.wait()
        shutil.rmtree(data, ignore_errors=True)


def svg(rows, counts, messages, path):
    """Median MB/s against the partition count (log scale), a line per build and side."""
    width, height, left, bottom, top, right = 720, 420, 70, 50, 30, 170
    top_value = max(r["median"] for r in rows) * 1.1
    xs = {p: left + i * (width - left - right) / max(1, len(counts) - 1)
          for i, p in enumerate(counts)}

    def y(value):
        return height - bottom - value / top_value * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="18">MB/s (median) by partition count, {messages:,} x 1 KiB</text>']
    for i in range(6):
        value = top_value * i / 5
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 8}" y="{y(value) + 4:.1f}" text-anchor="end">'
                     f'{value:.0f}</text>')
    for p, x in xs.items():
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{p}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 10}" '
                 'text-anchor="middle">partitions</text>')
    colours = {("old", "produce"): "#9ecae1", ("new", "produce"): "#08519c",
               ("old", "consume"): "#fdae6b", ("new", "consume"): "#a63603"}
    for n, ((build, side), colour) in enumerate(colours.items()):
        points = [(xs[r["partitions"]], y(r["median"])) for r in rows
                  if r["build"] == build and r["side"] == side]
        line = " ".join(f"{x:.1f},{v:.1f}" for x, v in points)
        dash = ' stroke-dasharray="6 4"' if build == "old" else ""
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"{dash}/>')
        for x, v in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{v:.1f}" r="3" fill="{colour}"/>')
        ly = top + 20 + n * 20
        parts.append(f'<line x1="{width - right + 15}" x2="{width - right + 40}" y1="{ly}" '
                     f'y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{width - right + 46}" y="{ly + 4}">{side}, {build}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", default="1,16,256,2048,8192")
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--out", default="bench/results/partitions")
    args = parser.parse_args()
    counts = [int(p) for p in args.partitions.split(",")]
    os.makedirs(args.out, exist_ok=True)
    builds = [("old", args.old), ("new", args.new)]
    runs = []
    total, done = args.rounds * len(counts) * len(builds), 0
    for r in range(1, args.rounds + 1):
        for partitions in counts:
            order = builds if r % 2 else builds[::-1]
            for build, binary in order:
                done += 1
                produce, consume = one_run(binary, partitions, args.messages)
                say(f"[{done}/{total}] round {r}, {partitions} partitions, {build}: "
                    f"produce {produce:.0f} MB/s, consume {consume:.0f} MB/s")
                runs.append({"round": r, "partitions": partitions, "build": build,
                             "produce": produce, "consume": consume})
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(runs[0]))
        writer.writeheader()
        writer.writerows(runs)
    rows = []
    for partitions in counts:
        for build, _ in builds:
            for side in ("produce", "consume"):
                values = [x[side] for x in runs if x["partitions"] == partitions
                          and x["build"] == build]
                rows.append({"partitions": partitions, "build": build, "side": side,
                             "median": statistics.median(values),
                             "low": min(values), "high": max(values)})
    med = {(r["partitions"], r["build"], r["side"]): r for r in rows}
    lines = ["| partitions | produce old | produce new | new/old | of 16, new "
             "| consume old | consume new | new/old | of 16, new |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in counts:
        cells = [str(p)]
        for side in ("produce", "consume"):
            old, new = med[(p, "old", side)], med[(p, "new", side)]
            cells += [f'{old["median"]:.0f} ({old["low"]:.0f}–{old["high"]:.0f})',
                      f'{new["median"]:.0f} ({new["low"]:.0f}–{new["high"]:.0f})',
                      f'{new["median"] / old["median"]:.2f}']
            base = med.get((16, "new", side))
            cells.append(f'{new["median"] / base["median"]:.2f}' if base else "")
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"MB/s, median (range) of {args.rounds} rounds; "
                f"{args.messages} messages of 1 KiB in 64 KiB batches, acks=1; batch MB/s\n\n" + table)
    svg(rows, counts, args.messages, os.path.join(args.out, "throughput.svg"))
    print(table)


if __name__ == "__main__":
    main()

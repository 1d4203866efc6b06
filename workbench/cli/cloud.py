"""`workbench cloud serve` (the cloud service) and `workbench adapt` (the device's adaptation rounds).

    workbench cloud serve --port 8765 --state cloud-state/          # 127.0.0.1; token: $WORKBENCH_CLOUD_TOKEN
    workbench adapt --cloud http://127.0.0.1:8765 --domain night --rounds 3 --json
    workbench adapt --domain palette                                 # no --cloud: starts one on a free port
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from workbench.cli.validate import RULES, Rule, _num, existing_file, whole


def _domain(v) -> bool:
    from workbench.data.shifts import DOMAINS
    return v in DOMAINS


# these subcommands' knobs, checked up front like every other (cli/validate.check_args); "port", "host",
# "threads", "steps" and "trace" already have their rules there
RULES.update({
    "cloud": Rule(lambda v: isinstance(v, str) and v.startswith(("http://", "https://")) and len(v) > 8,
                  "be an http(s) URL such as http://127.0.0.1:8765"),
    "domain": Rule(_domain, "name a shifted domain: night, palette or haze (workbench/data/shifts.py)"),
    "rounds": whole(1, 100),
    "stream": whole(1, 10_000),
    "eval_clips": whole(1, 10_000),
    "retries": whole(1, 50),
    "token_file": existing_file("name an existing file holding the shared secret"),
    "pocket": existing_file("name an existing .safetensors checkpoint"),
    "teacher": existing_file("name an existing .safetensors checkpoint"),
    "state": Rule(lambda v: isinstance(v, str) and v.strip() != "" and not Path(v).is_file(),
                  "name a folder (it is created when missing), not a file"),
    "max_request_bytes": whole(1024, 1 << 31),
    "replay": Rule(lambda v: _num(v) and 0 <= v <= 8, "be a number of source samples per upload in [0, 8]"),
    "drop": Rule(lambda v: _num(v) and 0 <= v < 1, "be a fraction in [0, 1)"),
})


def cmd_serve(args) -> int:
    from workbench.adapt.cloud import serve
    from workbench.adapt.weights import POCKET_FILE, TEACHER_FILE
    from workbench.errors import InputError
    from workbench.models.registry import weights_dir
    pocket = args.pocket or str(weights_dir() / POCKET_FILE)
    teacher = args.teacher or str(weights_dir() / TEACHER_FILE)
    for path in (pocket, teacher):
        if not os.path.isfile(path):
            raise InputError(path, "file not found (build it with `python -m workbench.adapt.weights`)")
    serve(args.state, pocket, teacher, args.port, args.host, args.token_file, args.max_request_bytes, args.threads)
    return 0


def cmd_adapt(args) -> int:
    from workbench.adapt.client import CloudRejected, CloudUnavailable, RetryPolicy
    from workbench.adapt.run import AdaptConfig, run_adaptation
    from workbench.data.shifts import DOMAINS
    from workbench.errors import InputError
    cfg = AdaptConfig(domain=args.domain or next(iter(DOMAINS)), rounds=args.rounds, stream=args.stream,
                      eval_clips=args.eval_clips, source_clips=args.eval_clips, pocket=args.pocket,
                      teacher=args.teacher)
    akd, uts = cfg.akd, cfg.device.uts
    cfg = replace(cfg, akd=replace(akd, steps=args.steps, route=args.route == "on",
                                   replay=akd.replay if args.replay is None else args.replay),
                  device=replace(cfg.device, uts=replace(uts, drop=uts.drop if args.drop is None else args.drop)))
    token = None
    if args.cloud:
        token = open(args.token_file).read().strip() if args.token_file else os.environ.get("WORKBENCH_CLOUD_TOKEN")
    if args.threads > 64:  # tighter than the shared --threads rule: the device and the embedded cloud share them
        raise InputError("--threads", f"must be 1..64, not {args.threads}")
    import torch
    torch.set_num_threads(args.threads)  # the device side runs on these threads too
    try:
        rec = run_adaptation(cfg, args.cloud, token, args.state, progress=not args.quiet, threads=args.threads,
                             retry=RetryPolicy(attempts=args.retries))
    except (CloudUnavailable, CloudRejected) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trace = rec.pop("trace")
    if args.trace:
        from workbench.trace import write_trace
        write_trace(trace, args.trace, {"kind": "adapt", "domain": rec["domain"]})
    if args.json:
        print(json.dumps(rec, indent=2, default=float))
    else:
        print(f"{rec['domain']}: CIDEr {rec['device_accuracy_before']:.3f} → {rec['rounds'][-1]['accuracy_after']:.3f}"
              f" (teacher {rec.get('teacher_accuracy', float('nan')):.3f}); uplink {rec['uplink_bytes'] / 1e3:.1f} kB "
              f"of {rec['send_everything_uplink_bytes'] / 1e6:.1f} MB send-everything; downlink "
              + ", ".join(f"{x['downlink_bytes'] / 1e3:.1f} kB" for x in rec["rounds"]))
    return 0


def add_parser(sub) -> None:
    c = sub.add_parser("cloud", help="the cloud side of cloud-device adaptation")
    csub = c.add_subparsers(dest="cloud_cmd", required=True)
    s = csub.add_parser("serve", help="serve the cloud (teacher + AKD + DWC) over HTTP")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback only)")
    s.add_argument("--state", default="cloud-state", help="state directory (devices, samples, updates)")
    s.add_argument("--pocket", help="the device pocket checkpoint (default: shipped)")
    s.add_argument("--teacher", help="the teacher checkpoint (default: shipped)")
    s.add_argument("--token-file", help="file with the shared secret (default $WORKBENCH_CLOUD_TOKEN, else "
                                        "a new one in STATE/token)")
    s.add_argument("--max-request-bytes", type=int, default=8 * 1024 * 1024)
    s.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    s.set_defaults(func=cmd_serve)

    a = sub.add_parser("adapt", help="run cloud-device adaptation rounds on a shifted domain")
    a.add_argument("--cloud", help="cloud URL (default: start one on a free loopback port)")
    a.add_argument("--domain", help="shifted domain (default: the first, night)")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--stream", type=int, default=12, help="clips the device streams per round (default 12)")
    a.add_argument("--eval-clips", type=int, default=24, help="held-out clips per domain (default 24)")
    a.add_argument("--steps", type=int, default=24, help="AKD steps per round, batch 8 (default 24)")
    a.add_argument("--route", choices=("on", "off"), default="on",
                   help="domain router: the adapted weights only for clips of the shifted domain (default on)")
    a.add_argument("--replay", type=float, help="source rehearsal samples per uploaded one in AKD (default: "
                                                 "AKDConfig's, 0 — the router protects the source domain)")
    a.add_argument("--drop", type=float, help="fraction of an uploaded sample's tokens not sent, most uncertain "
                                              "first (default: UTSConfig's)")
    a.add_argument("--token-file", help="shared-secret file for --cloud (default $WORKBENCH_CLOUD_TOKEN)")
    a.add_argument("--state", help="device state directory (default: a temporary one)")
    a.add_argument("--pocket", help="pocket checkpoint (default: shipped)")
    a.add_argument("--teacher", help="teacher checkpoint, for teacher_accuracy and the embedded cloud")
    a.add_argument("--trace", metavar="PARQUET", help="write the UTS trace (per sample / token) here")
    a.add_argument("--threads", type=int, default=1, help="torch threads of the device and the embedded cloud (default 1)")
    a.add_argument("--retries", type=int, default=6, help="attempts per request, back-off 0.25 s doubling to 4 s")
    a.add_argument("--json", action="store_true")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_adapt)

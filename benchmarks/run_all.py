"""Run every benchmark in turn (`make bench`); each prints its table and saves markdown + JSON in results/.

    python benchmarks/run_all.py [--limit N] [--model NAME]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_sttf.py", "bench_anc.py", "bench_stream.py", "bench_hf.py", "bench_sparsevlm.py",
           "bench_compare.py", "bench_cloud_device.py"]
TAKES_LIMIT = {"bench_sttf.py", "bench_anc.py", "bench_stream.py", "bench_sparsevlm.py", "bench_compare.py"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="clips per split (default: each script's own)")
    p.add_argument("--model", default=None)
    args = p.parse_args()
    extra = (["--limit", str(args.limit)] if args.limit else []) + (["--model", args.model] if args.model else [])
    for script in SCRIPTS:
        print(f"\n=== {script} ===", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / script), *(extra if script in TAKES_LIMIT else [])])
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())

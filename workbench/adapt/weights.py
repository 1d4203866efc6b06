"""Build the cloud-device weights shipped in `data/weights/`: the pocket device checkpoint and the teacher.

    python -m workbench.adapt.weights            # both (≈ 2 min), then their eval (≈ 5 min)
    python -m workbench.adapt.weights --pocket   # only the pocket checkpoint (seconds)

- `tinyvlm-shapes-pocket.safetensors`: C(s = 0.3, b = 4 per output channel, ρ = 0.1) of `tinyvlm-shapes`
  (`methods.ucop`), stored compressed — what a device downloads.
- `tinyvlm-shapes-teacher.safetensors`: the per-domain teacher stems over `tinyvlm-shapes` (`teacher.py`:
  closed-form ridge refits of the RGB stem on paired clean/shifted renders).
- `cloud-device.eval.json`: CIDEr of the full model, the pocket device and the teacher on every domain's
  held-out clips (the numbers of the README model cards).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from workbench.models.registry import weights_dir

POCKET_FILE = "tinyvlm-shapes-pocket.safetensors"
TEACHER_FILE = "tinyvlm-shapes-teacher.safetensors"
EVAL_FILE = "cloud-device.eval.json"


def pocket_config():
    from workbench.methods.ucop import UCOPConfig
    return UCOPConfig(sparsity=0.3, bits=4, group=0, rho=0.1)


def build_pocket(out: Path) -> dict:
    """Compress the shipped model and write the pocket checkpoint; returns its size record."""
    from workbench.methods import ucop
    from workbench.models.registry import create_model
    base = create_model("tinyvlm-shapes")
    cfg = pocket_config()
    pocket = ucop.compress(base, cfg)
    size = ucop.save_pocket(pocket, out / POCKET_FILE, {"source": "tinyvlm-shapes", "operator": "ucop"})
    return {"file_bytes": size, "weights_bytes": pocket.nbytes,
            "full_fp32_bytes": ucop.analytic_bytes(base, ucop.UCOPConfig())["total"]}


def build_teacher(out: Path) -> dict:
    """Fit the per-domain teacher stems of the shipped model and write the teacher file."""
    from workbench.adapt.teacher import TeacherConfig, build_teacher as fit, save_teacher
    from workbench.models.registry import create_model
    tensors, info = fit(create_model("tinyvlm-shapes"), TeacherConfig())
    save_teacher(out / TEACHER_FILE, tensors, "tinyvlm-shapes", {"recipe": "workbench.adapt.teacher", **info})
    return info


def evaluate(out: Path, n: int) -> dict:
    """CIDEr of full / pocket / teacher on each domain's first n held-out clips."""
    from workbench.adapt.evaluation import cider, device_captions, eval_clips, token_captions
    from workbench.data.shifts import DOMAINS
    from workbench.methods import ucop
    from workbench.adapt.teacher import load_teacher
    from workbench.models.registry import create_model
    full = create_model("tinyvlm-shapes")
    pocket = ucop.load_pocket(out / POCKET_FILE).model()
    teacher = load_teacher(out / TEACHER_FILE) if (out / TEACHER_FILE).is_file() else None
    rho = pocket_config().rho
    res = {"n_clips": n, "metric": "CIDEr", "date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": f"{platform.machine()} {platform.processor()}".strip(), "torch": torch.__version__}
    for dom in ("source", *DOMAINS):
        clips = eval_clips(dom, n)
        row = {"full": cider(device_captions(full, clips), clips),
               "pocket": cider(device_captions(pocket, clips), clips)}
        if teacher is not None:
            row["teacher"] = cider(token_captions(teacher.for_domain(dom), clips, rho), clips)
        res[dom] = row
        print(dom, row, flush=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pocket", action="store_true", help="only the pocket checkpoint")
    p.add_argument("--eval-clips", type=int, default=48, help="held-out clips per domain (default 48)")
    p.add_argument("--out", default=str(weights_dir()))
    args = p.parse_args(argv)
    out = Path(args.out)
    record = {"pocket": build_pocket(out)}
    print(record, flush=True)
    if not args.pocket:
        record["teacher"] = build_teacher(out)
    record["eval"] = evaluate(out, args.eval_clips)
    (out / EVAL_FILE).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

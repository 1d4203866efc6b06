"""The procedural performer behind the synthetic DVS gestures (`workbench.data.gestures`): a stick-figure
silhouette (head, torso, upper arms, forearms, hands) whose arms follow each class's kinematics, rasterised to
intensity frames at `render_hz`. Only `_render` is used outside this module; its third return value `info`
holds what the captions need (hands, turn direction, the "other" sub-kind, appearance).

Conventions: image x grows to the right, y downwards. The performer faces the camera, so the performer's
RIGHT arm appears on the image's LEFT. "cw"/"ccw" are as seen in the image.

    >>> frames, times, info = _render(0, 0, 0.5, 20, 64)
    >>> frames.shape, int(times[-1]), sorted(info)[:2]
    ((11, 64, 64), 500000, ['appearance', 'body'])
"""
from __future__ import annotations

import numpy as np

from workbench.data.readers.gesture_labels import DVS_GESTURE_CLASSES as GESTURE_CLASSES
from workbench.errors import InputError

GESTURE_VERSION = 1  # mixed into every seed: bump when sampling changes so old splits are never silently reused
SENSOR = 128
OTHER_KINDS = ("raise", "bend", "head", "jitter", "point")

# shape table: (name, radius key, channels); channel 0 = the whole figure (clothes colour), 1 = bare skin (arms,
# hands, head) drawn over it
_SHAPES = (("torso", "r_torso", (0,)), ("shoulders", "r_up", (0,)), ("neck", "r_neck", (0,)),
           ("head", "r_head", (0, 1)), ("upper_r", "r_up", (0, 1)), ("fore_r", "r_fore", (0, 1)),
           ("upper_l", "r_up", (0, 1)), ("fore_l", "r_fore", (0, 1)), ("hand_r", "r_hand", (0, 1)),
           ("hand_l", "r_hand", (0, 1)))



def _rng(seed: int, label: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([GESTURE_VERSION, int(seed), int(label)]))


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


# ---------------------------------------------------------------- kinematics (all arrays (N, 2) in pixels)

def _dir(angle, side=1.0):
    """Unit vectors for arm-local angles: 0 = outward, π/2 = down, -π/2 = up; side -1 = image left (mirrored)."""
    return np.stack([side * np.cos(angle), np.sin(angle)], -1)


def _ik(shoulder, target, l1, l2, prefer):
    """Elbow and hand for a 2-link arm reaching `target`; the elbow takes the side closer to `prefer` (x, y)."""
    v = target - shoulder
    dist = np.linalg.norm(v, axis=-1, keepdims=True)
    d = np.clip(dist, abs(l1 - l2) + 0.5, l1 + l2 - 0.05)
    unit = v / np.maximum(dist, 1e-6)
    alpha = np.arccos(np.clip((l1 * l1 + d * d - l2 * l2) / (2 * l1 * d), -1.0, 1.0))  # (N, 1)
    base = np.arctan2(unit[:, 1:], unit[:, :1])
    cands = [shoulder + l1 * np.concatenate([np.cos(base + s * alpha), np.sin(base + s * alpha)], -1) for s in (1, -1)]
    score = [float(((c - shoulder) @ np.asarray(prefer, float)).mean()) for c in cands]
    elbow = cands[int(np.argmax(score))]
    return elbow, shoulder + unit * d


def _phase(rng, t, f_lo, f_hi):
    """2π·f·t + φ with a slow tempo wobble, so no two samples share the exact rhythm."""
    f = _u(rng, f_lo, f_hi)
    return 2 * np.pi * f * t + _u(rng, 0, 2 * np.pi) + _u(rng, 0, 0.5) * np.sin(2 * np.pi * _u(rng, 0.2, 0.7) * t
                                                                               + _u(rng, 0, 2 * np.pi))


def _smoothstep(t, t0, width):
    x = np.clip((t - t0) / width, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _body(rng) -> dict:
    s = _u(rng, 0.85, 1.08)
    b = dict(s=s, cx=64 + _u(rng, -7, 7), sy=50 + _u(rng, -5, 6), r_head=8.5 * s * _u(rng, 0.92, 1.08),
             r_torso=12.5 * s * _u(rng, 0.9, 1.1), half=15 * s * _u(rng, 0.93, 1.07), l1=20 * s * _u(rng, 0.9, 1.1),
             l2=18.5 * s * _u(rng, 0.9, 1.1), r_up=3.8 * s * _u(rng, 0.85, 1.15), r_fore=3.2 * s * _u(rng, 0.85, 1.15),
             r_hand=4.0 * s * _u(rng, 0.9, 1.1), r_neck=3.5 * s)
    b["rest"] = [(np.pi / 2 - _u(rng, 0.1, 0.3), _u(rng, 0.0, 0.25)) for _ in range(2)]  # (upper, forearm bend)
    return b


def _arm_fk(shoulder, a1, a2, b, side):
    elbow = shoulder + b["l1"] * _dir(a1, side)
    return elbow, elbow + b["l2"] * _dir(a2, side)


def _rest_arm(rng, t, shoulder, b, k, side):
    """A hanging arm with a little idle sway."""
    a1, bend = b["rest"][k]
    sway = 0.06 * np.sin(2 * np.pi * _u(rng, 0.2, 0.8) * t + _u(rng, 0, 6.3))
    return _arm_fk(shoulder, a1 + sway, a1 + sway - bend, b, side)


def _kinematics(label: int, rng, t: np.ndarray, b: dict) -> tuple[dict, dict]:
    """Joint trajectories for one sample: shoulders, elbows, hands (R = performer's right = image left)."""
    n = len(t)
    cx, sy, s = b["cx"], b["sy"], b["s"]
    sway = np.stack([_u(rng, 0, 2) * np.sin(2 * np.pi * _u(rng, 0.2, 0.6) * t + _u(rng, 0, 6.3)),
                     _u(rng, 0, 1) * np.sin(2 * np.pi * _u(rng, 0.3, 0.9) * t + _u(rng, 0, 6.3))], -1)  # (N, 2)
    tilt = np.zeros(n)  # upper-body rotation about the hip (radians, + = clockwise in the image)
    info = {"hands": "both hands", "turn": "no circle", "sub": None}
    sh = {k: np.tile([cx + sd * b["half"], sy + 2 * s], (n, 1)) for k, sd in (("r", -1), ("l", 1))}
    arms = {}

    def ik(k, target, prefer):
        arms[k] = _ik(sh[k], target, b["l1"], b["l2"], prefer)

    def rest(k):
        arms[k] = _rest_arm(rng, t, sh[k], b, 0 if k == "r" else 1, -1 if k == "r" else 1)

    name = GESTURE_CLASSES[label]
    if label == 0:  # clapping: both hands meet in front of the chest
        ph = _phase(rng, t, 1.4, 3.0)
        gap_min, gap_max = 1.7 * b["r_hand"], _u(rng, 22, 36) * s
        gap = gap_min + (gap_max - gap_min) * (0.5 + 0.5 * np.cos(ph)) ** 1.3
        hx, hy = cx + _u(rng, -3, 3), sy + _u(rng, 12, 24) * s + _u(rng, 0, 1.5) * np.sin(ph)
        ik("r", np.stack([hx - gap / 2, np.broadcast_to(hy, (n,))], -1), (-1, 1))
        ik("l", np.stack([hx + gap / 2, np.broadcast_to(hy, (n,))], -1), (1, 1))
    elif label in (1, 2):  # hand wave: elbow out, forearm up, swinging side to side
        k, side = ("r", -1) if label == 1 else ("l", 1)
        ph = _phase(rng, t, 1.5, 3.5)
        a1 = _u(rng, -0.35, 0.55) + 0.08 * np.sin(ph + 0.6)
        a2 = -np.pi / 2 + _u(rng, -0.2, 0.2) + _u(rng, 0.3, 0.65) * np.sin(ph)
        arms[k] = _arm_fk(sh[k], a1, a2, b, side)
        rest("l" if k == "r" else "r")
        info["hands"] = "the right hand" if k == "r" else "the left hand"
    elif 3 <= label <= 6:  # the whole arm circles at the shoulder, cw = increasing image angle
        k = "r" if label in (3, 4) else "l"
        turn = 1.0 if label in (3, 5) else -1.0
        theta = _u(rng, 0, 2 * np.pi) + turn * _phase(rng, t, 0.6, 1.4)
        bend = _u(rng, -0.3, 0.3)
        elbow = sh[k] + b["l1"] * np.stack([np.cos(theta), np.sin(theta)], -1)
        arms[k] = (elbow, elbow + b["l2"] * np.stack([np.cos(theta + bend), np.sin(theta + bend)], -1))
        rest("l" if k == "r" else "r")
        info["hands"] = "the right hand" if k == "r" else "the left hand"
        info["turn"] = "clockwise" if turn > 0 else "counterclockwise"
    elif label == 7:  # arm roll: hands orbit each other in front of the chest, half a turn apart
        psi = (1 if rng.random() < 0.5 else -1) * _phase(rng, t, 1.8, 3.5)
        c = np.array([cx + _u(rng, -3, 3), sy + _u(rng, 14, 24) * s])
        rx, ry, dx = _u(rng, 3, 7) * s, _u(rng, 6, 10) * s, _u(rng, 2, 6) * s
        ik("r", c + np.stack([-dx + rx * np.cos(psi), ry * np.sin(psi)], -1), (-1, 1))
        ik("l", c + np.stack([dx + rx * np.cos(psi + np.pi), ry * np.sin(psi + np.pi)], -1), (1, 1))
    elif label == 8:  # air drums: hands apart, alternately hitting down (quick down, slower up)
        ph = _phase(rng, t, 1.3, 2.6)
        top, drop, spread = sy + _u(rng, 6, 13) * s, _u(rng, 11, 18) * s, _u(rng, 13, 21) * s
        hit = lambda p: ((1 - np.cos(p)) / 2) ** 1.8  # noqa: E731
        ik("r", np.stack([np.full(n, cx - spread), top + drop * hit(ph)], -1), (-1, 1))
        ik("l", np.stack([np.full(n, cx + spread), top + drop * hit(ph + np.pi)], -1), (1, 1))
    elif label == 9:  # air guitar: one hand strums fast at the hip, the other holds the neck up and out
        strum, fret = ("r", "l") if rng.random() < 0.7 else ("l", "r")
        sd = -1 if strum == "r" else 1
        ph = _phase(rng, t, 3.0, 5.5)
        amp = _u(rng, 4, 9) * s
        ik(strum, np.stack([cx + sd * _u(rng, 2, 8) * s + 0.3 * amp * np.sin(ph),
                            sy + _u(rng, 30, 38) * s + amp * np.sin(ph)], -1), (sd, 1))
        slide = _u(rng, 1, 4) * s * np.sin(2 * np.pi * _u(rng, 0.3, 1.0) * t + _u(rng, 0, 6.3))
        ik(fret, np.stack([cx - sd * (_u(rng, 28, 36) * s + slide), np.full(n, sy + _u(rng, 2, 14) * s)], -1),
           (0, 1))
        info["hands"] = "the right hand" if strum == "r" else "the left hand"
    else:  # other gestures: one of several non-class behaviours
        kind = OTHER_KINDS[int(rng.integers(len(OTHER_KINDS)))]
        info["sub"] = kind
        if kind == "raise":  # both arms raise sideways together and come down
            ph = _phase(rng, t, 0.5, 1.2)
            up = _u(rng, 1.2, 2.5) * (0.5 - 0.5 * np.cos(ph))
            for k, side in (("r", -1), ("l", 1)):
                a1 = b["rest"][0][0] - up
                arms[k] = _arm_fk(sh[k], a1, a1 - _u(rng, 0, 0.3), b, side)
        elif kind == "bend":  # the upper body leans from side to side, arms hanging
            tilt = _u(rng, 0.12, 0.28) * np.sin(_phase(rng, t, 0.4, 1.0))
            rest("r"), rest("l")
            info["hands"] = "the whole body"
        elif kind == "head":  # hands go up to the head (and maybe down again): arcs in joint-angle space
            t_up = _u(rng, 0.0, 0.5) * t[-1]
            p = _smoothstep(t, t_up, _u(rng, 0.3, 0.6))
            if rng.random() < 0.5:
                p = p * (1 - _smoothstep(t, t_up + _u(rng, 0.7, 1.1), _u(rng, 0.3, 0.6)))
            head = np.array([cx, sy - 10 * s - b["r_head"]])
            for k, side in (("r", -1), ("l", 1)):
                a1r, bend = b["rest"][0 if k == "r" else 1]
                a1g = _u(rng, -0.8, -0.4)  # upper arm out and up
                elbow = sh[k][0] + b["l1"] * _dir(a1g, side)
                to_head = head + np.array([side * (b["r_head"] + 0.3 * b["r_hand"]), 0.0]) - elbow
                a2g = np.arctan2(to_head[1], side * to_head[0]) % (2 * np.pi)  # forearm folds in towards the head
                arms[k] = _arm_fk(sh[k], a1r + p * (a1g - a1r), a1r - bend + p * (a2g - (a1r - bend)), b, side)
        elif kind == "jitter":  # aimless smooth random arm movement around the rest pose
            for k, side in (("r", -1), ("l", 1)):
                a1, bend = b["rest"][0 if k == "r" else 1]
                n1 = sum(_u(rng, 0.1, 0.35) * np.sin(2 * np.pi * _u(rng, 0.3, 2.0) * t + _u(rng, 0, 6.3))
                         for _ in range(3))
                n2 = sum(_u(rng, 0.1, 0.5) * np.sin(2 * np.pi * _u(rng, 0.3, 2.0) * t + _u(rng, 0, 6.3))
                         for _ in range(3))
                arms[k] = _arm_fk(sh[k], a1 - np.abs(n1), a1 - bend - np.abs(n2), b, side)
        else:  # "point": one arm lifts to point sideways, holds, maybe lowers again
            k, side = ("r", -1) if rng.random() < 0.5 else ("l", 1)
            p = _smoothstep(t, _u(rng, 0.0, 0.6) * t[-1], _u(rng, 0.3, 0.6))
            if rng.random() < 0.5:
                p = p * (1 - _smoothstep(t, _u(rng, 1.3, 1.6), _u(rng, 0.3, 0.4)))
            a_rest = b["rest"][0 if k == "r" else 1][0]
            a1 = a_rest + p * (_u(rng, -0.5, 0.2) - a_rest)
            arms[k] = _arm_fk(sh[k], a1, a1 - 0.1, b, side)
            rest("l" if k == "r" else "r")
            info["hands"] = "the right hand" if k == "r" else "the left hand"
    joints = {"sh_r": sh["r"], "sh_l": sh["l"], "el_r": arms["r"][0], "ha_r": arms["r"][1],
              "el_l": arms["l"][0], "ha_l": arms["l"][1]}
    neck = np.tile([cx, sy - 4 * s], (n, 1))
    joints.update(neck=neck, head=np.tile([cx, sy - 10 * s - b["r_head"]], (n, 1)),
                  torso_top=np.tile([cx, sy + 6 * s], (n, 1)))
    pivot = np.array([cx, sy + 48 * s])
    cos, sin = np.cos(tilt)[:, None], np.sin(tilt)[:, None]
    for key, p in joints.items():  # lean about the hip, then sway
        d = p - pivot
        rotated = np.concatenate([cos * d[:, :1] - sin * d[:, 1:], sin * d[:, :1] + cos * d[:, 1:]], -1)  # (N, 2)
        joints[key] = pivot + rotated + sway
    joints["torso_bottom"] = np.tile([cx, sy + 95 * s], (n, 1)) + sway
    info["class_name"] = name
    return joints, info


# ---------------------------------------------------------------- rendering

def _capsule_rows(ax, ay, bx, by, r, ys):
    """Interval [xl, xr] of the capsule (segment a–b, radius r) on the line y = ys (xl > xr: empty); any axes.

    The capsule is convex, so its cut is the hull of the cuts of its two end discs and its rectangle.
    """
    big = np.inf
    ha = np.sqrt(np.maximum(r * r - (ys - ay) ** 2, 0.0))
    hb = np.sqrt(np.maximum(r * r - (ys - by) ** 2, 0.0))
    in_a, in_b = np.abs(ys - ay) <= r, np.abs(ys - by) <= r
    xl = np.minimum(np.where(in_a, ax - ha, big), np.where(in_b, bx - hb, big))
    xr = np.maximum(np.where(in_a, ax + ha, -big), np.where(in_b, bx + hb, -big))
    dx, dy = bx - ax, by - ay
    l2 = dx * dx + dy * dy
    rel = ys - ay
    lo = np.full_like(ys, -big)
    hi = np.full_like(ys, big)
    # along the segment: 0 <= (x-ax)·dx + rel·dy <= l2 ; across it: |(x-ax)·(-dy) + rel·dx| <= r·|d|
    for coef, p, q in ((dx, -rel * dy, l2 - rel * dy), (-dy, -r * np.sqrt(l2) - rel * dx, r * np.sqrt(l2) - rel * dx)):
        c = np.where(np.abs(coef) < 1e-9, 1e-9, coef)
        e1, e2 = p / c, q / c
        lo = np.maximum(lo, np.minimum(e1, e2))
        hi = np.minimum(hi, np.maximum(e1, e2))
    rect = (lo <= hi) & (l2 > 1e-12)
    xl = np.minimum(xl, np.where(rect, ax + lo, big))
    xr = np.maximum(xr, np.where(rect, ax + hi, -big))
    return xl, xr


def _rasterise(a: np.ndarray, b: np.ndarray, radius: np.ndarray, channels: np.ndarray, size: int,
               supersample: int = 2) -> np.ndarray:
    """Anti-aliased coverage of capsules, summed per channel and clipped to 1: returns (size, C, N, size).

    a, b: (N, S, 2) segment ends (u, v) per frame and shape; radius (S,); channels (S, C) bool membership.
    Output axes are (u, C, N, v). Each shape is cut into intervals along u on lines of constant v (exact
    coverage along u, `supersample` lines per pixel along v); an interval becomes 4 weighted entries in a
    second-difference buffer, and one running sum over u (u-major layout: `size` contiguous vector adds)
    turns the buffer into coverage. Pass (y, x) points to get a (y, C, N, x) result.
    """
    n, s_count = a.shape[:2]
    c_count = channels.shape[1]
    ss = supersample
    r = np.broadcast_to(radius, (n, s_count))
    vmin = np.minimum(a[..., 1], b[..., 1]) - r  # (N, S)
    vmax = np.maximum(a[..., 1], b[..., 1]) + r
    k0 = np.clip(np.ceil((vmin + 0.5) * ss - 0.5), 0, size * ss).astype(np.int64)  # first sub-line inside
    k1 = np.clip(np.floor((vmax + 0.5) * ss - 0.5) + 1, 0, size * ss).astype(np.int64)
    cnt = np.maximum(k1 - k0, 0).reshape(-1)  # (N·S,)
    seg = np.repeat(np.arange(n * s_count), cnt)  # (R,) one entry per sub-line interval
    k = np.arange(len(seg)) + np.repeat(k0.reshape(-1) - (np.cumsum(cnt) - cnt), cnt)
    vs = (k + 0.5) / ss - 0.5
    a_f, b_f = a.reshape(-1, 2), b.reshape(-1, 2)  # (N·S, 2)
    ul, ur = _capsule_rows(a_f[seg, 0], a_f[seg, 1], b_f[seg, 0], b_f[seg, 1], r.reshape(-1)[seg], vs)
    ul = np.clip(ul, -0.5, size - 0.5)
    ur = np.clip(ur, -0.5, size - 0.5)
    ok = ur > ul
    seg, ul, ur, k = seg[ok], ul[ok], ur[ok], k[ok]
    frame, shape = np.divmod(seg, s_count)
    line = frame * size + k // ss  # (R,) index into the N·size pixel lines
    # kink of the running coverage at ul (+1 slope) and ur (-1 slope), spread over two neighbouring cells
    q_l, q_r = ul + 0.5, ur + 0.5
    i_l, i_r = np.floor(q_l).astype(np.int64), np.floor(q_r).astype(np.int64)
    f_l, f_r = q_l - i_l, q_r - i_r
    w = np.float32(1.0 / ss)
    f_l, f_r = (f_l * w).astype(np.float32), (f_r * w).astype(np.float32)
    vals = np.concatenate([w - f_l, f_l, f_r - w, -f_r])
    # one flat index per entry and channel: ((u·C + ch)·N·size + line), entries of absent channels dropped
    rows_per_ch = n * size
    base = [(c * c_count) * rows_per_ch + line for c in (i_l, i_l + 1, i_r, i_r + 1)]
    idx, wts = [], []
    for ch in range(c_count):
        m = channels[shape, ch]
        idx += [bi[m] + ch * rows_per_ch for bi in base]
        wts += [vals[j * len(line):(j + 1) * len(line)][m] for j in range(4)]
    buf = np.zeros((size + 2) * c_count * rows_per_ch, np.float32)  # (size+2, C, N·size) flattened
    np.add.at(buf, np.concatenate(idx), np.concatenate(wts))
    buf = buf.reshape(size + 2, c_count * rows_per_ch)
    for i in range(1, size + 1):  # running sum over u: second difference → per-pixel coverage
        np.add(buf[i], buf[i - 1], out=buf[i])
    cov = buf[:size].reshape(size, c_count, n, size)  # (u, C, N, v)
    np.minimum(cov, 1.0, out=cov)  # overlapping shapes of one channel: coverage is at most 1
    return cov


def _appearance(rng, size: int) -> dict:
    """Background level, static illumination texture, clothes/skin brightness, contrast polarity, flicker."""
    dark_body = rng.random() < 0.25  # most samples: bright figure in a darker room; some the other way round
    bg0 = _u(rng, 0.45, 0.7) if dark_body else _u(rng, 0.08, 0.26)
    yy, xx = np.mgrid[0:size, 0:size] / size
    tex = sum(_u(rng, 0.01, 0.04) * np.cos(2 * np.pi * (_u(rng, 0.5, 4) * xx * rng.choice([-1, 1])
                                                       + _u(rng, 0.5, 4) * yy) + _u(rng, 0, 6.3)) for _ in range(3))
    tex = np.clip(1 + tex + rng.normal(0, 0.015, (size, size)), 0.8, 1.2)  # static illumination over the scene
    c_clothes = _u(rng, 0.55, 1.2)  # log contrasts against the background; skin differs from clothes by >= 0.3
    c_skin = c_clothes + rng.choice([-1, 1]) * _u(rng, 0.3, 0.6)
    if c_skin < 0.45:
        c_skin = 2 * c_clothes - c_skin
    sgn = -1 if dark_body else 1
    clothes, skin = bg0 * np.exp(sgn * c_clothes), bg0 * np.exp(sgn * c_skin)
    lim = lambda v: float(np.clip(v, 0.03, 0.8))  # noqa: E731  (× texture × flicker stays inside [0, 1])
    return dict(tex=tex.astype(np.float32), bg=bg0, clothes=lim(clothes), skin=lim(skin),
                flicker=(_u(rng, 0, 0.04), _u(rng, 0.3, 2.0), _u(rng, 0, 6.3)), dark_body=dark_body)


def _render(seed: int, label: int, duration_s: float, render_hz: float, size: int):
    if not 0 <= int(label) < len(GESTURE_CLASSES):
        raise InputError("label", f"must be 0..{len(GESTURE_CLASSES) - 1}, got {label}")
    if not (duration_s > 0 and render_hz > 0 and size >= 16):
        raise InputError("render_gesture", f"needs duration_s > 0, render_hz > 0, size >= 16 "
                         f"(got {duration_s}, {render_hz}, {size})")
    rng = _rng(seed, label)
    n = int(round(duration_s * render_hz)) + 1
    t = np.arange(n) / render_hz  # seconds
    body = _body(rng)
    joints, info = _kinematics(int(label), rng, t, body)
    look = _appearance(rng, SENSOR)
    ends = {"torso": ("torso_top", "torso_bottom"), "shoulders": ("sh_r", "sh_l"), "neck": ("neck", "head"),
            "head": ("head", "head"), "upper_r": ("sh_r", "el_r"), "fore_r": ("el_r", "ha_r"),
            "upper_l": ("sh_l", "el_l"), "fore_l": ("el_l", "ha_l"), "hand_r": ("ha_r", "ha_r"),
            "hand_l": ("ha_l", "ha_l")}
    a = np.stack([joints[ends[nm][0]] for nm, _, _ in _SHAPES], 1)  # (N, S, 2)
    b = np.stack([joints[ends[nm][1]] for nm, _, _ in _SHAPES], 1)
    scale = size / SENSOR  # geometry is authored on the 128 sensor
    a, b = (a[..., ::-1] + 0.5) * scale - 0.5, (b[..., ::-1] + 0.5) * scale - 0.5  # (x, y) → (y, x)
    radius = np.array([body[rk] for _, rk, _ in _SHAPES]) * scale
    channels = np.zeros((len(_SHAPES), 2), bool)
    for i, (_, _, chs) in enumerate(_SHAPES):
        channels[i, list(chs)] = True
    cov = _rasterise(a, b, radius, channels, size)  # (y, 2, N, x)
    fig, skin = cov[:, 0], cov[:, 1]  # (y, N, x) views
    fig *= np.float32(look["clothes"] - look["bg"])  # figure over the background, skin over the figure
    skin *= np.float32(look["skin"] - look["clothes"])
    fig += skin
    fig += np.float32(look["bg"])
    tex = look["tex"] if size == SENSOR else np.ones((size, size), np.float32)  # (y, x)
    frames = np.empty((n, size, size), np.float32)
    np.multiply(fig.transpose(1, 0, 2), tex[None], out=frames)  # (y, N, x) → (N, y, x), times the texture
    amp, f_fl, ph_fl = look["flicker"]
    gain = (1 + amp * np.sin(2 * np.pi * f_fl * t + ph_fl)).astype(np.float32)  # (N,) global illumination flicker
    frames *= gain[:, None, None]
    times = np.rint(t * 1e6).astype(np.int64)
    info.update(gain=gain, appearance={k: v for k, v in look.items() if k != "tex"}, body={k: v for k, v in body.items()
                                                                             if k != "rest"})
    return frames, times, info

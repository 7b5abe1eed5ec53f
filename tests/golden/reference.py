"""Plain-Python reference implementations (Fractions and loops), independent of systolic.golden."""

from fractions import Fraction
import math


def round_shift_ref(x: int, k: int, rounding: str) -> int:
    if k <= 0:
        return x * 2 ** (-k)
    q = Fraction(x, 2 ** k)
    if rounding == "half_even":
        return round(q)  # Python rounds Fractions half to even
    return math.floor(q + Fraction(1, 2))


def saturate_ref(x: int, bits: int, signed: bool) -> int:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    return min(max(x, lo), hi)


def quantize_ref(x: float, bits: int, signed: bool, frac: int, rounding: str) -> int:
    v = Fraction(x) * Fraction(2) ** frac
    r = round(v) if rounding == "half_even" else math.floor(v + Fraction(1, 2))
    return saturate_ref(r, bits, signed)


def requant_ref(acc, bias, k, bits, signed, relu, rounding):
    y = round_shift_ref(acc + bias, k, rounding)
    if relu:
        y = max(y, 0)
    return saturate_ref(y, bits, signed)


def conv2d_ref(x, w, stride, padding):
    """x: nested lists [n][h][w][c]; w: [kh][kw][ci][co]; returns acc [n][oh][ow][co]."""
    n, h, wd, c = len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])
    kh, kw, co = len(w), len(w[0]), len(w[0][0][0])
    sh, sw = stride
    pt, pb, pl, pr = padding
    oh = (h + pt + pb - kh) // sh + 1
    ow = (wd + pl + pr - kw) // sw + 1
    out = [[[[0] * co for _ in range(ow)] for _ in range(oh)] for _ in range(n)]
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for o in range(co):
                    s = 0
                    for di in range(kh):
                        for dj in range(kw):
                            yy, xx = i * sh + di - pt, j * sw + dj - pl
                            if 0 <= yy < h and 0 <= xx < wd:
                                for ci in range(c):
                                    s += x[b][yy][xx][ci] * w[di][dj][ci][o]
                    out[b][i][j][o] = s
    return out


def round_div_ref(n: int, d: int, rounding: str) -> int:
    """The rational n / d rounded to an integer by *rounding* (Python Fractions: exact)."""
    q = Fraction(n, d)
    if rounding == "half_even":
        return round(q)
    return math.floor(q + Fraction(1, 2))


def grouped_conv2d_ref(x, w, stride, padding, groups):
    """Grouped convolution by loops: w is [kh][kw][c_in/groups][c_out]; output channel o reads the input
    channels of group o // (c_out / groups) only. Returns acc [n][oh][ow][co]."""
    n, h, wd = len(x), len(x[0]), len(x[0][0])
    kh, kw, cig, co = len(w), len(w[0]), len(w[0][0]), len(w[0][0][0])
    cog = co // groups
    sh, sw = stride
    pt, pb, pl, pr = padding
    oh = (h + pt + pb - kh) // sh + 1
    ow = (wd + pl + pr - kw) // sw + 1
    out = [[[[0] * co for _ in range(ow)] for _ in range(oh)] for _ in range(n)]
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for o in range(co):
                    g = o // cog
                    s = 0
                    for di in range(kh):
                        for dj in range(kw):
                            yy, xx = i * sh + di - pt, j * sw + dj - pl
                            if 0 <= yy < h and 0 <= xx < wd:
                                for ci in range(cig):
                                    s += x[b][yy][xx][g * cig + ci] * w[di][dj][ci][o]
                    out[b][i][j][o] = s
    return out


def pool_windows_ref(x, pool, stride, padding):
    """For each output position of a padded pool: the list of *input* elements its window covers (padding
    positions left out), per channel: [n][oh][ow][c] -> list of ints."""
    n, h, wd, c = len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])
    ph, pw = pool
    sh, sw = stride
    pt, pb, pl, pr = padding
    oh = (h + pt + pb - ph) // sh + 1
    ow = (wd + pl + pr - pw) // sw + 1
    out = [[[[None] * c for _ in range(ow)] for _ in range(oh)] for _ in range(n)]
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    out[b][i][j][ch] = [x[b][yy][xx][ch]
                                        for yy in range(i * sh - pt, i * sh - pt + ph)
                                        for xx in range(j * sw - pl, j * sw - pl + pw)
                                        if 0 <= yy < h and 0 <= xx < wd]
    return out


def avg_ref(window_sum: int, area: int, f_in: int, f_out: int, bits: int, signed: bool, rounding: str) -> int:
    """sat(round(sum * 2**(f_out - f_in) / area)): the exact rational, rounded once, saturated."""
    v = Fraction(window_sum) * Fraction(2) ** (f_out - f_in) / area
    r = round(v) if rounding == "half_even" else math.floor(v + Fraction(1, 2))
    return saturate_ref(r, bits, signed)

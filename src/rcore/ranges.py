"""Address ranges as sorted (start, end) pairs: merged, and with holes cut out.
Small and without imports of rcore's own, so that a dump loads it without the
restart's modules."""

import bisect


def subtract_ranges(ranges, holes):
    """Parts of the (start, end) `ranges` not covered by `holes`."""
    holes = merge_ranges(holes)
    starts = [hs for hs, _ in holes]
    out = []
    for s, e in ranges:
        cur = s
        # the holes that may overlap [s, e): from the last one starting at or before s
        # (indexed, not sliced: a chain's pages are tens of thousands of holes)
        for i in range(max(0, bisect.bisect_right(starts, s) - 1), len(holes)):
            hs, he = holes[i]
            if hs >= e:
                break
            if he <= cur:
                continue
            if hs > cur:
                out.append((cur, hs))
            cur = max(cur, he)
            if cur >= e:
                break
        if cur < e:
            out.append((cur, e))
    return out


def merge_ranges(ranges):
    out = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out

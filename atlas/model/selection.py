"""Channel selections written by users: `139`, `0-15`, `0,3,7-9`, `all`, checked against a layer's count."""

from __future__ import annotations

from atlas.errors import UserError

WHOLE_LAYER = -1  # the `channel` of a whole-layer render (classic DeepDream): every channel at once


def parse_channels(text: str, count: int, layer: str = "the layer") -> list[int]:
    """Expand a channel selection for a layer with `count` channels; errors name the layer and its count."""
    text = str(text).strip()
    if text == "all":
        return list(range(count))
    channels: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(v) for v in part.split("-", 1))
                if high < low:
                    raise ValueError
                channels.extend(range(low, high + 1))
            else:
                channels.append(int(part))
        except ValueError:
            raise UserError(f"bad channel selection '{text}': use a number, a range like 0-15, a list like "
                            "0,3,7-9, or all") from None
    check_channels(channels, count, layer)
    return list(dict.fromkeys(channels))


def check_channels(channels: list[int], count: int, layer: str) -> None:
    """Every channel must exist in the layer."""
    bad = [c for c in channels if not 0 <= c < count]
    if bad:
        raise UserError(f"channel {bad[0]} is out of range for {layer}, which has {count} channels "
                        f"(0-{count - 1})")


def format_channels(channels: list[int]) -> str:
    """The inverse of `parse_channels`: `[9, 3, 10, 11]` as `3,9-11` (runs of consecutive channels)."""
    runs: list[list[int]] = []
    for channel in sorted(channels):
        if runs and channel == runs[-1][-1] + 1:
            runs[-1].append(channel)
        else:
            runs.append([channel])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)

"""The console's assets: readable colours, nothing from another host, no HTML built from data."""

import re
from pathlib import Path

from services.api.console import ASSETS


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_every_text_colour_reads_at_4_5_to_1_on_every_background() -> None:
    css = (ASSETS / "console.css").read_text()
    colours = dict(re.findall(r"--(\w+):\s*(#[0-9a-fA-F]{6})", css))
    for text in ("fg", "muted", "accent", "bad", "warn", "ok"):
        for background in ("bg", "panel"):
            assert contrast(colours[text], colours[background]) >= 4.5, (text, background)
    assert contrast("#ffffff", colours["accent"]) >= 4.5  # button labels


def test_the_page_loads_nothing_from_another_host_and_writes_data_as_text() -> None:
    page = (ASSETS / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {"/console/console.css", "/console/console.js"} <= set(links)
    assert all(link.startswith(("/", "#")) and not link.startswith("//") for link in links), links
    script = (ASSETS / "console.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", script)
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "") and "https://" not in script


def test_every_asset_the_page_names_exists() -> None:
    for name in ("console.css", "console.js"):
        assert Path(ASSETS / name).stat().st_size > 0

"""Named benchmark scenarios shipped with the package (``relied/env/presets/<name>.json``).

A preset is a :class:`Scenario` with a description of what it is for: ``relied simulate
--preset NAME`` and ``relied train --preset NAME`` start from it. The peak presets are
calibrated (``benchmarks/presets.py``) so that shortest-path routing meets real delay and a
better routing policy exists.
"""

from __future__ import annotations

from importlib import resources

from pydantic import BaseModel, ConfigDict

from relied.env.scenario import Scenario


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    scenario: Scenario


class PresetError(ValueError):
    """An unknown or unreadable preset; the message lists the names."""


def preset_names() -> list[str]:
    folder = resources.files("relied.env") / "presets"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> Preset:
    """The preset called ``name``; :class:`PresetError` naming the shipped ones otherwise."""
    if name not in preset_names():
        raise PresetError(f"unknown preset '{name}'; shipped presets: "
                          f"{', '.join(preset_names())}")
    text = (resources.files("relied.env") / "presets" / f"{name}.json").read_text()
    return Preset.model_validate_json(text)

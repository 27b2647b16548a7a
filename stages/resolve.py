"""resolve: each section of params.yaml as it reaches one entry, in recipes/<name>/<section>.yaml.

The shared section merged with the entry's own overrides, keys that do not reach the entry
(another modality's, another task's) set to null, and module_kwargs reduced to the module the
entry trains (``config.recipe``). The entry's other stages declare these files as their params,
so a change reruns exactly the entries whose effective settings it changes: a shared key that
an entry overrides, or one that does not apply to it, leaves its recipe, and everything after
it, as it was. recipes/<name>/labels.yaml holds the entry's ``label_names``, read by the stages
that show labels alone (evaluate and export). The files are small and kept in git, the one
place to read what an entry runs with (`tandem show NAME` prints the same).
"""

import yaml

from stages.layout import layout
from tandem import config, io

SECTIONS = tuple(config.OVERRIDABLE)
PARAMS = (*SECTIONS, "datasets.{name}")


def run(params, name: str) -> None:
    for section in SECTIONS:
        values = config.recipe(params, name, section).as_dict()
        io.write_text(layout(name).recipe(section), yaml.safe_dump(values, sort_keys=False))
    labels = {"label_names": params.datasets[name].label_names}
    io.write_text(layout(name).recipe("labels"), yaml.safe_dump(labels, sort_keys=False))

"""Built-in PDE generators: small versions of the public datasets, written in their raw layouts.

Each generator module (listed in :data:`GENERATOR_MODULES`) defines a module-level
``GENERATORS: list[GeneratorSpec]``, one spec per dataset id it can produce. A spec's
``write_raw`` runs the solver and writes the *raw public layout* (MATLAB v7.3 for FNO,
PDEBench HDF5, CFDBench npy+json, PDEArena HDF5) under ``request.raw_dir`` and returns the
RAW_PATH that ``moepot data convert <spec.source> RAW_PATH --name <spec.name>`` accepts. The
orchestrator (:mod:`moepot.data.generators.run`) then converts it to the protocol and records
the generated sizes in ``catalog.yaml`` at the data root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from moepot._imports import import_if_present

# One module per PDE family; each defines GENERATORS.
GENERATOR_MODULES = (
    "moepot.data.generators.ns2d_fno",  # incompressible NS, vorticity (FNO)
    "moepot.data.generators.dr_pdb",  # diffusion-reaction (PDEBench)
    "moepot.data.generators.swe_pdb",  # shallow water radial dam break (PDEBench)
    "moepot.data.generators.ns2d_pdb",  # compressible NS (PDEBench)
    "moepot.data.generators.cfdbench",  # cavity, tube, cylinder (CFDBench)
    "moepot.data.generators.pdearena",  # smoke buoyancy NS (PDEArena)
)


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate for one dataset id.

    Attributes:
        raw_dir: directory the raw files are written into (created by the caller).
        n_train: number of training trajectories (the converter's split reproduces it).
        n_test: number of test trajectories.
        size: simulation grid side.
        stored_size: spatial side of the stored fields (<= size; upstream stores some sets coarser).
        seed: base random seed; outputs are a deterministic function of the whole request.
        progress: show a progress bar.
    """

    raw_dir: Path
    n_train: int
    n_test: int
    size: int
    stored_size: int
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class GeneratorSpec:
    """How to make one dataset id.

    Attributes:
        name: dataset id in the catalogue (e.g. ``ns2d_fno_1e-5``).
        source: converter SOURCE that reads the raw layout (e.g. ``fno``, ``pdebench-swe``).
        write_raw: runs the solver, writes the raw layout, returns the converter's RAW_PATH.
        size: default simulation grid side.
        stored_size: default stored grid side.
        n_train: default number of training trajectories.
        n_test: default number of test trajectories.
        quick: overrides (keys of GenerateRequest) used by ``--suite quick``.
        description: one line on the PDE and solver.
        stores_simulation_grid: the raw layout stores the simulation grid itself (PDEArena):
            ``stored_size`` must equal ``size`` (and defaults to it).
        max_size: the largest ``size`` the solver can run (None: no limit).
        simulations: ``(n_train, n_test) ->`` how many simulations ``write_raw`` runs for them
            (None: one per trajectory; CFDBench simulates whole cases and cuts them into
            segments). The generator benchmark's cost model.
    """

    name: str
    source: str
    write_raw: Callable[[GenerateRequest], Path]
    size: int
    stored_size: int
    n_train: int
    n_test: int
    quick: dict = field(default_factory=dict)
    description: str = ""
    stores_simulation_grid: bool = False
    max_size: int | None = None
    simulations: Callable[[int, int], int] | None = None

    def simulation_count(self, n_train: int, n_test: int) -> int:
        """Simulations ``write_raw`` runs for ``n_train`` + ``n_test`` trajectories."""
        return n_train + n_test if self.simulations is None else self.simulations(n_train, n_test)


def all_generators() -> dict[str, GeneratorSpec]:
    """Dataset id -> spec for every generator module that is present."""
    specs: dict[str, GeneratorSpec] = {}
    for module_name in GENERATOR_MODULES:
        module = import_if_present(module_name)
        if module is None:
            continue
        for spec in module.GENERATORS:
            specs[spec.name] = spec
    return specs

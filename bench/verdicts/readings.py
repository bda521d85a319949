"""Readings: where a paper can be read two ways, the primary reading runs the cells and a companion runs the other
(bench/grids/<paper>.yaml `companions`, each with the reading it changes and its `basis`: text, code or choice).
A headline claim is judged under every reading its cells' experiments have in the profile:

  primary                 the cells' own experiments
  variant=growing         each experiment of the claim that has a `growing` companion replaced by it (the others
                          stay primary: the reading covers k of the claim's n cells)
  dataset=cifar10 + variant=epochs300
                          companions of companions chain: the claim's experiments replaced by the descendant that
                          applies the most of the reading's changes

A companion that swaps the method (Bhyravabhottla's equal-epoch standard baseline) is another comparison, not a
reading of the same experiment, and is left out. A reading's basis is the weakest of its changes' (text, then code,
then choice): a claim that holds only under readings the text does not state says so.
"""

from dataclasses import dataclass

from bench import experiments as ex
from bench.run.targets import support

BASIS_ORDER = ("primary", "text", "code", "choice")


@dataclass(frozen=True)
class Reading:
    changes: tuple[str, ...] = ()  # 'field=value' changes, in the order the grid declares them; () is the primary

    @property
    def label(self) -> str:
        return " + ".join(self.changes) or "primary"


@dataclass
class Readings:
    """The readings a profile runs, and how each maps an experiment to the run that reads it that way."""

    children: dict  # experiment id -> [(companion Experiment, change, basis)]
    basis_of: dict  # change -> basis

    def descendants(self, exp: ex.Experiment) -> list[tuple[frozenset, ex.Experiment]]:
        """(set of changes, experiment) for the experiment itself and every companion chained from it."""
        out, todo = [], [(frozenset(), exp)]
        while todo:
            changes, e = todo.pop(0)
            out.append((changes, e))
            todo += [(changes | {change}, child) for child, change, _ in self.children.get(e.id, [])]
        return out

    def of(self, exps) -> list[Reading]:
        """Every reading some of these experiments have: the primary first, then by number of changes and name."""
        order = {}
        for exp in exps:
            for changes, _ in self.descendants(exp):
                order.setdefault(changes, None)
        rank = {c: i for i, c in enumerate(self.basis_of)}
        return [
            Reading(tuple(sorted(c, key=lambda x: rank[x]))) for c in sorted(order, key=lambda c: (len(c), sorted(c)))
        ]

    def apply(self, reading: Reading, exp: ex.Experiment) -> ex.Experiment:
        """The run that reads `exp` under `reading`: the descendant applying the most of its changes (none: exp)."""
        wanted = set(reading.changes)
        best = (0, exp)
        for changes, e in self.descendants(exp):
            if changes <= wanted and len(changes) > best[0]:
                best = (len(changes), e)
        return best[1]

    def basis(self, reading: Reading) -> str:
        return max((self.basis_of[c] for c in reading.changes), key=BASIS_ORDER.index, default="primary")


def readings(profile: str) -> Readings:
    """The companions this profile runs, as readings of the experiments they stand beside."""
    children, basis_of = {}, {}
    comps = ex.companions()
    for eid, (beside, change, basis) in ex.companion_readings().items():
        exp = comps[eid][0]
        if "method=" in change or support(exp, profile):
            continue
        children.setdefault(beside, []).append((exp, change, basis))
        basis_of.setdefault(change, basis)
    return Readings(children, basis_of)


def summary(outcomes: list[tuple[Reading, str, str, int, int]], holds: str = "HOLDS") -> tuple[str, str, str]:
    """(readings, holds_under, readings_note) of one claim from (reading, basis, test, cells covered, cells) per
    reading: the verdict under each, 'k of n' readings it holds under, and a note where it holds only under readings
    the text does not state."""
    parts = []
    for reading, basis, test, covered, total in outcomes:
        cover = "" if not reading.changes else f", {covered} of {total} cells"
        parts.append(f"{reading.label} [{basis}{cover}]: {test}")
    held = [(r, b) for r, b, t, _, _ in outcomes if t == holds]
    under = f"{len(held)} of {len(outcomes)}" + (f" ({', '.join(r.label for r, _ in held)})" if held else "")
    note = ""
    if held and all(b in ("code", "choice") for _, b in held):
        note = (
            "holds only under readings the text does not state (" + ", ".join(f"{r.label}: {b}" for r, b in held) + ")"
        )
    return "; ".join(parts), under, note

"""`bench data status | download | verify`: whether each dataset is ready under the data root, with the samples it
holds against the catalog's split sizes, downloading it first or re-hashing its files when asked."""

from bench import BenchError
from bench.claims.datasets import DATASETS
from bench.data import counts, ensure, family, status


def dataset_names(names: list[str], all_: bool = False) -> list[str]:
    """The datasets a command names (every one when none or --all); an unknown name is an error."""
    names = list(DATASETS) if all_ or not names else names
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise BenchError(f"unknown dataset {', '.join(unknown)}: one of {', '.join(DATASETS)}")
    return names


def report(action: str, names: list[str], root=None, require: bool = False):
    """Print each dataset's state (`action`: status, download or verify); a dataset that is not ready, holds other
    sample counts than the catalog's or does not verify is an error at the end (with `require`, at once)."""
    failed = False
    for name in names:
        if not DATASETS[name].loader:
            print(f"{name}: no loader yet")
            continue
        if action == "download":
            root_dir = ensure(name, root)
            problem = family(DATASETS[name]).layout_problem(DATASETS[name], root_dir)
            print(f"{name}: {'ready' if not problem else 'NOT READY: ' + problem} under {root_dir}")
            failed |= bool(problem)
            continue
        st = status(name, root, check_sums=action == "verify")
        if require and st["problem"]:  # the workflow's check before any training job starts
            raise BenchError(
                f"dataset {name} not found under {st['root']}: {st['problem']}; put it there (bench data "
                f"download {name} on a machine with internet), or point data_root / --data-root at the "
                f"folder that holds it, or run with --config download=true"
            )
        state = "ready" if not st["problem"] else f"not ready: {st['problem']}"
        if not st["problem"] and not require:  # the samples it holds, against the catalog's split sizes
            info, found = DATASETS[name], counts(name, root)
            want = (info.train_size, info.test_size)
            state += f", {found[0]:,} training / {found[1]:,} test samples" + (
                ""
                if found == want
                else f", NOT the {want[0]:,} / {want[1]:,} of {name} (a partial or substituted copy: download it again)"
            )
            failed |= found != want
        print(f"{name}: {state} (root {st['root']})")
        for f in st["files"]:
            mark = {True: "verified", False: "CHECKSUM MISMATCH", None: "not verified"}[f["verified"]]
            detail = f" ({f['detail']})" if f["detail"] else ""
            print(
                f"  {f['file']}: {'present' if f['present'] else 'absent'}"
                + (f", {mark}{detail}" if action == "verify" and f["present"] else "")
            )
            failed |= f["verified"] is False
        failed |= action == "verify" and bool(st["problem"])
    if failed:
        raise BenchError(
            f"bench data {action}: some datasets are not ready, hold other sample counts than the "
            f"catalog's, or do not verify (see above)"
        )

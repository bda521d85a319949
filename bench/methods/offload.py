"""Freed gradients and optimizer states kept on the host: how PredSim's wide ResNet-50 (about 2 B parameters in its
units' similarity convs, every unit with its own Adam) fits one 24 GB GPU, never what it computes.

Config `optimizer_offload` (auto | on | off; default off, the GPU profiles set auto), decided by `offload_rule` for
the plan (bench.cost.resources) and the run (bench.run.runner, on the GPU memory free at its start) alike:
  * freed gradients: each unit's gradients are set to None right after its own optimizer step, so the device holds
    one unit's at a time (they are zeroed before its next backward anyway: nothing read changes);
  * offloaded states: the optimizer states of some units live in host memory (pinned on CUDA) between their steps.
    Before a unit's step they are copied into one device staging buffer (sized for the largest offloaded unit),
    prefetched on a side stream while the units before it compute; the unchanged torch step runs on the device,
    and the updated states are copied back right after it. Exact copies and the same step: bit-identical results.
Checkpoints: between steps an offloaded optimizer's state tensors are its host copies, so state_dict() saves them as
any state (after the copies in flight land); load_state_dict() puts states on the parameters' device, and a hook
then moves an offloaded optimizer's back to the host, one optimizer at a time (a resume never holds them all).
"""

import torch

# YAML reads a bare on/off as a boolean: both spellings are the same setting
_SETTINGS = {"auto": "auto", "on": "on", "off": "off", "true": "on", "false": "off"}


def offload_setting(cfg: dict) -> str:
    """Config key `optimizer_offload`: auto | on | off (default off: the GPU profiles set auto)."""
    from bench import BenchError

    value = cfg.get("optimizer_offload", "off")
    setting = _SETTINGS.get(str(value).lower())
    if setting is None:
        raise BenchError(f"optimizer_offload must be auto, on or off, got {value!r}")
    return setting


def largest_first(sizes: list[float]) -> list[int]:
    """Indices by size, the largest first (ties: the later one first)."""
    return sorted(range(len(sizes)), key=lambda i: (-sizes[i], -i))


def _gb(size: float) -> str:
    return f"{size / 1e9:.1f} GB"


def offload_rule(setting: str, need: float, available: float, grads: list[float], states: list[float]) -> dict:
    """{"on": gradients freed after each unit's step, "units": the indices of the units whose optimizer states
    live on the host, "why"}. `need`: the job's device peak with every gradient and state on the device; `grads`,
    `states`: each unit's gradient and optimizer-state bytes; `available`: the node's GPU in a plan, the memory free
    at a run's start (0: no GPU, where auto is off). on: every unit offloaded; auto: nothing where the job fits;
    else gradients freed, then states offloaded, the largest unit first, until it fits (the device then also
    holds the staged states of one unit, the largest offloaded). Largest first: the fewest units, so the fewest
    copies and waits, for the bytes missing; in PredSim they are the deepest units, whose prefetch has the most
    compute before them to hide behind."""
    if setting != "auto":
        on = setting == "on"
        return {"on": on, "units": list(range(len(states))) if on else [], "why": f"optimizer_offload: {setting}"}
    if not available:
        return {"on": False, "units": [], "why": "auto: no GPU"}
    if need <= available:
        return {"on": False, "units": [], "why": f"auto: the job fits without it ({_gb(need)} of {_gb(available)})"}
    device, units = need - sum(grads) + max(grads, default=0.0), []
    for i in largest_first(states):
        if device <= available:
            break
        units.append(i)
        off = [states[j] for j in units]
        device = need - sum(grads) + max(grads) - sum(off) + max(off)
    fits = "fits" if device <= available else "does not fit even so"
    return {
        "on": True,
        "units": units,
        "why": f"auto: {_gb(need)} > {_gb(available)}; with each unit's gradients freed after its step and "
        f"{len(units)} of {len(states)} units' optimizer states on the host ({_gb(sum(states[j] for j in units))}) "
        f"{_gb(device)}: {fits}",
    }


def _entries(opt: torch.optim.Optimizer) -> list:
    """(param, state key) of the optimizer's per-parameter state tensors (Adam's moments, SGD's momentum; not the
    step count)."""
    return [
        (p, k)
        for group in opt.param_groups
        for p in group["params"]
        for k, v in sorted(opt.state.get(p, {}).items())
        if k != "step" and torch.is_tensor(v) and v.shape == p.shape
    ]


def _dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense, in any dimension order: its elements fill exactly numel places."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz > 1):
        if stride != expected:
            return False
        expected *= size
    return True


class _Slot:
    """One optimizer's offloaded states, laid out one after the other (each with its own strides: a channels_last
    weight's moments stay channels_last) in a flat host tensor, pinned on CUDA."""

    def __init__(self, opt: torch.optim.Optimizer, pin: bool):
        self.opt, self.entries = opt, _entries(opt)
        tensors = [opt.state[p][k] for p, k in self.entries]
        self.layout, offset = [], 0
        for t in tensors:
            if t.dtype != tensors[0].dtype or not _dense(t):
                raise ValueError("optimizer_offload: the states of one optimizer must be dense and of one dtype")
            self.layout.append((t.shape, t.stride(), offset))
            offset += t.numel()
        self.numel, self.signature = offset, self._signature(opt)
        self.host = torch.empty(offset, dtype=tensors[0].dtype if tensors else torch.float32, pin_memory=pin)

    @staticmethod
    def _signature(opt) -> list:
        return [(id(p), k, opt.state[p][k].shape, opt.state[p][k].stride()) for p, k in _entries(opt)]

    def matches(self, opt) -> bool:
        return self.signature == self._signature(opt)

    def views(self, flat: torch.Tensor, start: int = 0) -> list:
        return [flat.as_strided(shape, stride, flat.storage_offset() + start + o) for shape, stride, o in self.layout]

    def point(self, flat: torch.Tensor, start: int = 0):
        """The optimizer's states become views of `flat` (the host copy, or the device staging buffer at `start`)."""
        for (p, k), view in zip(self.entries, self.views(flat, start)):
            self.opt.state[p][k] = view

    def save(self, non_blocking: bool):
        """The host copy <- the optimizer's current state tensors."""
        for (p, k), view in zip(self.entries, self.views(self.host)):
            view.copy_(self.opt.state[p][k], non_blocking=non_blocking)


class StateOffload:
    """The optimizer states of some units kept on the host between their steps (the module's docstring). `groups`:
    unit index -> its optimizers, for the offloaded units only; `before(i)` and `after(i)` go around unit i's
    step (nothing for a unit not offloaded). A unit's first step creates its states on the device as always;
    `after` then lays them out on the host. Bookkeeping, for tests: `slots` (optimizer -> its host copy),
    `staging` (the device buffer), `staged` (the unit whose states it holds, or is being filled with)."""

    def __init__(self, groups: dict[int, list], device: torch.device):
        self.groups, self.order, self.device = groups, sorted(groups), device
        self.cuda = device.type == "cuda" and bool(groups)
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.slots: dict = {}
        self.staging: torch.Tensor | None = None
        self.staged: int | None = None
        self.ready = self.copied = None  # CUDA events: the prefetch's copy in, the last copy out
        self.hooks = [
            hook
            for unit, opts in groups.items()
            for opt in opts
            for hook in (
                opt.register_load_state_dict_post_hook(lambda o, unit=unit: self._adopt(unit, o)),
                opt.register_state_dict_pre_hook(lambda o: self.wait()),
            )
        ]

    def close(self):
        """The optimizers' hooks removed (before another StateOffload takes them over)."""
        self.wait()
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    def _unit_slots(self, unit: int) -> list | None:
        """The unit's slots, one per optimizer; None before its first step (no state yet)."""
        slots = [self.slots.get(opt) for opt in self.groups[unit]]
        return None if any(s is None for s in slots) else slots

    def _grow(self, slots: list):
        """A staging buffer that holds the unit's states, allocated on the main stream (call it outside the side
        stream's context): the training steps use it there, and the side stream is recorded as a user too, so the
        allocator reuses the buffer only once both are done with it."""
        need = sum(s.numel for s in slots)
        if self.staging is None or self.staging.numel() < need:
            self.staging = torch.empty(need, dtype=slots[0].host.dtype, device=self.device)
            if self.cuda:
                self.staging.record_stream(self.stream)

    def _copy_in(self, slots: list):
        """The staging buffer <- the unit's host copies, on the current stream."""
        start = 0
        for s in slots:
            self.staging[start : start + s.numel].copy_(s.host, non_blocking=self.cuda)
            start += s.numel

    def before(self, unit: int):
        """Unit `unit`'s states from the host into the staging buffer (already, where prefetched), and its optimizers
        pointed at them there."""
        slots = self._unit_slots(unit) if unit in self.groups else None
        if slots is None:
            return
        if self.staged is not None and self.ready is not None:  # a prefetch in flight (this unit's, or to overwrite)
            torch.cuda.current_stream(self.device).wait_event(self.ready)
        if self.staged != unit:
            self._grow(slots)
            self._copy_in(slots)
            self.staged = unit
        start = 0
        for s in slots:
            s.point(self.staging, start)
            start += s.numel

    def after(self, unit: int):
        """Unit `unit`'s updated states copied back to the host (laid out anew where its first step just created
        them), its optimizers pointed at the host copies; then the next offloaded unit's states prefetched."""
        if unit not in self.groups:
            return
        for opt in self.groups[unit]:
            slot = self.slots.get(opt)
            if slot is None or not slot.matches(opt):
                slot = self.slots[opt] = _Slot(opt, pin=self.cuda)
            slot.save(non_blocking=self.cuda)
            slot.point(slot.host)
        self.staged = None
        if self.cuda:
            self.copied = torch.cuda.current_stream(self.device).record_event()
        self.prefetch(self.order[(self.order.index(unit) + 1) % len(self.order)])

    def prefetch(self, unit: int):
        """Unit `unit`'s states into the staging buffer ahead of its step: on CUDA on the side stream, once the last
        copy out of the buffer has landed, while the main stream computes; on a CPU at once."""
        slots = self._unit_slots(unit)
        if slots is None:
            return
        self._grow(slots)
        if self.cuda:
            with torch.cuda.stream(self.stream):
                if self.copied is not None:
                    self.stream.wait_event(self.copied)
                self._copy_in(slots)
                self.ready = self.stream.record_event()
        else:
            self._copy_in(slots)
        self.staged = unit

    def wait(self):
        """Until the copies in flight have landed (the host copies are then what a state_dict reads)."""
        for event in (self.copied, self.ready):
            if event is not None:
                event.synchronize()

    def _adopt(self, unit: int, opt):
        """After opt.load_state_dict (which puts every state on its parameter's device): its states to the host."""
        self.wait()
        self.staged = None  # what the staging buffer held is stale now
        if _entries(opt):
            slot = self.slots[opt] = _Slot(opt, pin=self.cuda)
            slot.save(non_blocking=False)
            slot.point(slot.host)
        else:
            self.slots.pop(opt, None)

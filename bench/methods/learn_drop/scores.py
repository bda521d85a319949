"""The scoring rule of Learn & Drop (bench/methods/learn_drop): pure functions of the gradients and the scores.

Score (docs/methods/learn-drop.md#51-score): during every scoring epoch, after each backward and before the optimizer
step, every
scored conv weight adds its raw `.grad` to a per-weight running sum S (same shape as the weight) and |grad|'s sum
to a scalar A (no per-iteration history; `torch._foreach_*`, no host sync). At the epoch end P_l = 1 - ||S_l||_1
/ A_l (Eq. 2; `layer_score`; A = 0, i.e. no gradient, gives 1; clamped to [0, 1] against rounding), AAPD_l =
A_l / N_l (Eq. 1, logged only) and P' = standardized P over the head's conv layers (Eq. 3, `standardize`, ddof
`std_ddof`; a zero std (<= 1e-9) gives all zeros, so no transition and no drop). `select_drop` applies Eq. 4
(first t with P'_t > 0 and P'_{t+1} < 0; candidates 0..n*, or 0..n*-1 with candidates_inclusive false) or the prose's
maximum-prefix-sum reading, then the median rule: drop iff candidates are non-empty and median(P'_candidates) >=
median of the P' stored for all previously dropped layers at their drop (-inf before the first drop).
"""

import math

import numpy as np
import torch

RULES = ("eq4", "max_prefix")
STD_EPS = 1e-9


def _l1(x) -> float:
    """Sum of absolute values of a tensor, an ndarray, or a list of them (float64)."""
    if isinstance(x, (list, tuple)):
        return float(sum(_l1(t) for t in x))
    if isinstance(x, torch.Tensor):
        return float(x.detach().double().abs().sum())
    return float(np.abs(np.asarray(x, dtype=np.float64)).sum())


def score_from_sums(l1_of_sum: float, abs_sum: float) -> float:
    """P = 1 - l1_of_sum / abs_sum, 1.0 when abs_sum is 0 (no gradient), clamped to [0, 1]."""
    abs_sum = float(abs_sum)
    if abs_sum == 0.0 or not math.isfinite(abs_sum):
        return 1.0 if abs_sum == 0.0 else float("nan")
    return min(1.0, max(0.0, 1.0 - float(l1_of_sum) / abs_sum))


def layer_score(grad_sum, abs_grad_sum) -> float:
    """P_l of Eq. 2 from the two epoch accumulators of layer l.

    grad_sum: the per-weight running sum of the gradients over the epoch's iterations, sum_j g_lij (a tensor or
    ndarray shaped like the weight, or a list of them for a layer with several scored tensors);
    abs_grad_sum: the scalar sum_j sum_i |g_lij| (float, 0-d tensor or ndarray).
    Returns 1 - ||grad_sum||_1 / abs_grad_sum as a float in [0, 1]; 1.0 when abs_grad_sum is 0
    (docs/methods/learn-drop.md#53-ambiguities
    item 6)."""
    if isinstance(abs_grad_sum, torch.Tensor):
        abs_grad_sum = float(abs_grad_sum.detach().double().sum())
    return score_from_sums(_l1(grad_sum), float(np.sum(abs_grad_sum)))


def standardize(scores, ddof: int = 0) -> np.ndarray:
    """P' of Eq. 3: (P - mean P) / std P over the given layers (sequence of floats -> float64 ndarray).
    std with `ddof` (0: population, numpy's default). When the std is 0 (all scores equal, or one layer) or there
    are not more than ddof scores, every P' is 0 (no layer is 'above' or 'below' the others: no transition).
    "Std 0" means std <= STD_EPS = 1e-9: P lies in [0, 1] and comes from float32 sums, so smaller spreads are
    rounding noise (and would be blown up to +-1 by the division)."""
    p = np.asarray(list(scores), dtype=np.float64)
    if p.size == 0:
        return p
    if p.size <= ddof:
        return np.zeros_like(p)
    std = p.std(ddof=ddof)
    if not std > STD_EPS:  # equal scores up to rounding (np.std of [0.7] * 3 is 1.1e-16, not 0)
        return np.zeros_like(p)
    return (p - p.mean()) / std


def transition_index(std_scores, rule: str = "eq4") -> int | None:
    """n* for the given rule, or None. eq4: the first t in 0..n-2 with P'_t > 0 and P'_{t+1} < 0 (strict).
    max_prefix: the first t in 0..n-2 maximising P'_0 + ... + P'_t, when that sum is > 0 (a non-empty sub-vector
    of positive sum; the last layer excluded as in Eq. 4)."""
    p = [float(v) for v in std_scores]
    if rule == "eq4":
        return next((t for t in range(len(p) - 1) if p[t] > 0 and p[t + 1] < 0), None)
    if rule == "max_prefix":
        if len(p) < 2:
            return None
        prefix = np.cumsum(np.asarray(p[:-1], dtype=np.float64))
        best = int(np.argmax(prefix))
        return best if prefix[best] > 0 else None
    raise ValueError(f"unknown transition_rule '{rule}' ({', '.join(RULES)})")


def select_drop(std_scores, dropped_std_scores=(), rule: str = "eq4", inclusive: bool = True) -> list[int]:
    """Indices (into std_scores: the head's conv layers in order) to drop now; [] for no drop.

    std_scores: P' of the head's conv layers (sequence of floats); dropped_std_scores: the P' stored for every
    previously dropped layer when it was dropped. Candidates: 0..n* (0..n*-1 when not inclusive; eq4 only),
    n* from `transition_index`. Drop iff the candidates are non-empty and median(P'_candidates) >= median
    (dropped_std_scores) (-inf when nothing was dropped yet)."""
    nstar = transition_index(std_scores, rule)
    if nstar is None:
        return []
    count = nstar + 1 if (inclusive or rule != "eq4") else nstar
    if count < 1:
        return []
    p = np.asarray([float(v) for v in std_scores], dtype=np.float64)
    m_c = float(np.median(p[:count]))
    m_d = (
        float(np.median(np.asarray(list(dropped_std_scores), dtype=np.float64)))
        if len(dropped_std_scores)
        else -math.inf
    )
    return list(range(count)) if m_c >= m_d else []


class GradientSums:
    """Per-weight gradient sums S and scalar |grad| sums A of the head's scored tensors over one epoch."""

    def __init__(self, layers: list, key: str):  # the head's `Layer`s (layers.py)
        self.layers = layers
        self.tensors = [t for layer in layers for t in (layer.scored if key == "conv_weight" else layer.params)]
        self.owner = torch.tensor(
            [j for j, layer in enumerate(layers) for _ in (layer.scored if key == "conv_weight" else layer.params)]
        )
        self.sums = [torch.zeros_like(t) for t in self.tensors]
        self.abs = torch.zeros(len(self.tensors), device=self.tensors[0].device, dtype=torch.float32)
        self.numel = torch.zeros(len(layers), dtype=torch.float64).index_add_(
            0, self.owner, torch.tensor([float(t.numel()) for t in self.tensors], dtype=torch.float64)
        )

    def add(self):
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in self.tensors]
        torch._foreach_add_(self.sums, grads)
        self.abs += torch.stack(torch._foreach_norm(grads, 1)).float()

    def scores(self) -> tuple[list[float], list[float]]:
        """(P, AAPD) per layer, read from the device once."""
        l1 = torch.stack(torch._foreach_norm(self.sums, 1)).double().cpu()
        a = self.abs.double().cpu()
        l1_layer = torch.zeros(len(self.layers), dtype=torch.float64).index_add_(0, self.owner, l1)
        a_layer = torch.zeros(len(self.layers), dtype=torch.float64).index_add_(0, self.owner, a)
        p = [score_from_sums(x, y) for x, y in zip(l1_layer.tolist(), a_layer.tolist())]
        return p, (a_layer / self.numel).tolist()

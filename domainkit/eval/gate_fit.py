"""Fitting the answerability gate (``answer.gate``) on validation questions: the weights
by a logistic regression shrunk towards the prior, the cut by the false-refusal budget."""

from __future__ import annotations

import math

import numpy as np

from domainkit.answer.gate import FEATURES, PRIOR_BIAS, PRIOR_WEIGHTS, Gate, GateFeatures, sigmoid
from domainkit.utils.stats import prediction_bound

__all__ = [
    "PRIOR_BIAS",
    "allowed_misses",
    "calibrate",
    "fit_logistic",
    "fit_weights",
    "low_end",
    "tradeoff",
]


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1.0, prior: np.ndarray | None = None, steps=50
):
    """Logistic regression by Newton's method, the weights shrunk towards ``prior`` (zero
    by default) with strength ``l2`` on standardized features: a small validation set
    moves the weights little from the prior, a large one as far as it shows.

    Returns:
        (weights, bias) on the original feature scale.
    """
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-9] = 1.0
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    target = np.zeros(z.shape[1])
    if prior is not None:
        target[:-1] = prior * std
    w = target.copy()
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0  # the intercept is not shrunk
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -60, 60)))
        gradient = z.T @ (p - y) + penalty * (w - target)
        hessian = (z.T * (p * (1 - p))) @ z + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[:-1] / std
    return weights, float(w[-1] - (weights * mean).sum())


def tradeoff(probabilities: list[float], answerable: list[bool]) -> list[dict]:
    """For every cut: share of answerable questions answered and unanswerable refused."""
    n_pos = sum(answerable) or 1
    n_neg = (len(answerable) - sum(answerable)) or 1
    curve = []
    for cut in sorted({0.0, *(round(p, 4) for p in probabilities), 1.0001}):
        answered = [p >= cut for p in probabilities]
        kept = sum(a and y for a, y in zip(answered, answerable, strict=True)) / n_pos
        refused = sum(not a and not y for a, y in zip(answered, answerable, strict=True)) / n_neg
        curve.append({"threshold": cut, "answered": round(kept, 4), "refused": round(refused, 4)})
    return curve


def allowed_misses(n: int, budget: float) -> int:
    """How many of ``n`` answerable validation questions the cut may refuse so that new
    answerable questions are refused at most ``budget`` of the time, on average.

    A cut at the (m+1)-th lowest score of n answerable questions refuses, of a new one from
    the same distribution, (m+1)/(n+1) in expectation (order statistics), not m/n: on ten
    validation questions, refusing one of them refuses 18% of new ones. So m is the largest
    with (m+1)/(n+1) <= budget, and 0 (the cut at the lowest answerable score) below that.
    """
    return max(0, math.floor(budget * (n + 1) + 1e-9) - 1)


# Fewer validation questions of either kind than this and the prior gate stays.
MIN_PER_KIND = 10
# Fewer answerable validation questions answered right than this and the budget counts all;
# fewer answerable questions of the users' own and the cut goes to the low end of them all.
MIN_GUARDED = 5
# Shrinkage towards the prior (per standardized feature; the data term sums over questions).
PRIOR_STRENGTH = 4.0


def fit_weights(
    x: np.ndarray, y: np.ndarray, target: dict[str, float], strength: float
) -> tuple[dict[str, float], float]:
    """The gate's weights by ``fit_logistic`` shrunk towards ``target``, every weight keeping
    the hand-set prior's sign: a feature whose fitted weight points the other way is dropped
    (weight 0) and the rest refitted.

    Returns:
        (weight by feature name, bias).
    """
    active = list(range(len(FEATURES)))
    while True:
        toward = np.array([target.get(FEATURES[i], 0.0) for i in active])
        fitted, bias = fit_logistic(x[:, active], y, l2=strength, prior=toward)
        keep = [
            i for i, w in zip(active, fitted, strict=True) if w * PRIOR_WEIGHTS[FEATURES[i]] > 0
        ]
        if len(keep) == len(active) or not keep:
            break
        active = keep
    weights = dict.fromkeys(FEATURES, 0.0)
    weights.update({FEATURES[i]: float(w) for i, w in zip(active, fitted, strict=True)})
    return weights, bias


def calibrate(
    features: list[GateFeatures],
    answerable: list[bool],
    max_false_refusals: float | None = None,
    right: list[bool] | None = None,
    synthetic: list[bool] | None = None,
    prior: Gate | None = None,
) -> tuple[Gate, dict]:
    """Fit the gate on validation questions with known answerability, its weights shrunk
    towards ``prior``'s (the gate before calibration, ``answer.gate.prior_gate``).

    Every weight keeps the prior's sign: validation questions are synthetic, and a signal
    that seems to point the wrong way there (answerable questions looking refusal-prone to
    the model) is a quirk of that set that real questions do not share, so the feature is
    dropped (weight 0) and the rest refitted, rather than learnt backwards.

    With ``max_false_refusals`` the threshold is the highest cut whose expected share of
    *new* answerable questions refused stays within that budget (``allowed_misses``): as
    many refusals as the budget allows. ``right`` marks the answerable questions the runtime
    answers right; when at least ``MIN_GUARDED`` are, only they count towards the budget:
    refusing a question that would be answered wrong loses no right answer.

    The budget holds only on questions like the users': ``synthetic`` marks the questions
    synth wrote from a passage. Those reuse the passage's words, so they score higher than
    users' questions about the same fact, and a cut set on them refuses many of the users'
    answerable questions (docs/decisions.md, "the gate's cut on synthetic validation
    questions"). So unless at least ``MIN_GUARDED`` answerable questions are users' own (a
    domain's ``validation.yaml``), and enough that refusing none of them keeps the budget
    (1/(n+1) <= budget: 9 at 10%), the cut goes to the low end of every answerable
    validation question's scores, right or wrong: where the budget's share of new ones like
    them falls (``low_end``, a bound estimated from them all), and below each of the users'
    own answered right.

    Without a budget, the cut maximizes balanced accuracy (the mean of answerable questions
    answered and unanswerable ones refused), so neither kind dominates because it is more
    common.

    Returns:
        The gate and a report: counts, features dropped, balanced accuracy and the
        trade-off curve.
    """
    y = np.array(answerable, dtype=float)
    if min(y.sum(), len(y) - y.sum()) < MIN_PER_KIND:
        raise ValueError(
            f"calibration needs at least {MIN_PER_KIND} answerable and {MIN_PER_KIND} "
            f"unanswerable questions (got {int(y.sum())} and {int(len(y) - y.sum())})"
        )
    x = np.stack([f.vector() for f in features])
    target = (prior or Gate()).weights
    weights, bias = fit_weights(x, y, target, PRIOR_STRENGTH)
    gate = Gate(weights, bias, 0.5, True)
    probabilities = [gate.probability(f) for f in features]
    curve = tradeoff(probabilities, answerable)
    guarded, users = _guarded(probabilities, answerable, right, synthetic)
    # A cut set at the low end stays below the users' own questions answered right, however
    # few: they are what new questions look like.
    below = [p for p, r in _own(probabilities, answerable, right, synthetic) if r]
    if users and max_false_refusals is not None and 1 / (len(guarded) + 1) > max_false_refusals:
        # Too few to keep the budget even refusing none of them (order statistics): the cut
        # goes to the low end of every answerable question, as with synthetic questions only.
        guarded, users = [p for p, ok in zip(probabilities, answerable, strict=True) if ok], False
    if users and max_false_refusals is not None:
        # Fitted on the users' questions too, the weights lift those questions' own scores
        # above a new question's; so the cut is set on the scores each got from a fit without
        # it, and the gate is the mean of those fits (the scale the scores are on).
        gate, held_out = _cross_fitted(x, y, target, features, synthetic)
        weights = gate.weights
        probabilities = [gate.probability(f) for f in features]
        curve = tradeoff(probabilities, answerable)
        guarded, _ = _guarded(held_out, answerable, right, synthetic)
    if max_false_refusals is None:
        best = max(curve, key=lambda c: (c["answered"] + c["refused"], -abs(c["threshold"] - 0.5)))
        cut = min(best["threshold"], 1.0)
    else:
        # The exact score of the (m+1)-th lowest guarded question: it and all above are
        # answered (the curve's cuts are rounded for the report).
        misses = allowed_misses(len(guarded), max_false_refusals) if users else 0
        if not users:
            cut = min([low_end(guarded, max_false_refusals), *below])
        elif misses < len(guarded):
            cut = sorted(guarded)[misses]
        else:
            cut = 1.0  # a budget of 100%
    gate.threshold = cut
    best = _at(cut, probabilities, answerable)
    report = {
        "questions": len(features),
        "answerable": int(y.sum()),
        "unanswerable": int(len(y) - y.sum()),
        "dropped": [name for name in FEATURES if weights[name] == 0.0],
        "max_false_refusals": max_false_refusals,
        "guarded": len(guarded),
        "guarded_questions": "users'" if users else "synthetic",
        "answered": best["answered"],
        "refused": best["refused"],
        "curve": curve,
    }
    return gate, report


def low_end(scores: list[float], share: float) -> float:
    """The score a new question like these falls below with probability ``share``: the
    normal prediction bound on the scores' logits (mean + t * sd * sqrt(1 + 1/n)), exact
    for normal logits. The lowest of n scores is such a bound for 1/(n+1) too, but it is one
    question, often a garbled synthetic one, so a cut there moves from build to build; the
    bound rests on all n (a question far below the rest widens it, and it goes lower)."""
    p = np.clip(np.array(scores, dtype=float), 1e-6, 1 - 1e-6)
    bound = prediction_bound(np.log(p / (1 - p)), share) if share > 0 else None
    # No budget or nothing to fit: below them all, as before any fit.
    return float(p.min()) if bound is None else sigmoid(bound)


# Folds of the users' questions for the cut's out-of-fold scores.
FOLDS = 5


def _cross_fitted(
    x: np.ndarray,
    y: np.ndarray,
    target: dict[str, float],
    features: list[GateFeatures],
    synthetic: list[bool] | None,
) -> tuple[Gate, list[float]]:
    """The mean of ``FOLDS`` fits, each leaving out a fold of the users' questions, and every
    question's score from the fit that left it out (a synthetic question: the mean fit's)."""
    own = [i for i, s in enumerate(synthetic or [False] * len(y)) if not s]
    folds = [own[k::FOLDS] for k in range(FOLDS) if own[k::FOLDS]]
    fits: list[tuple[dict[str, float], float]] = []
    scores: dict[int, float] = {}
    for held in folds:
        keep = np.ones(len(y), dtype=bool)
        keep[held] = False
        weights, bias = fit_weights(x[keep], y[keep], target, PRIOR_STRENGTH)
        fold = Gate(weights, bias, 0.5, True)
        fits.append((weights, bias))
        scores |= {i: fold.probability(features[i]) for i in held}
    mean = Gate(
        {name: float(np.mean([w[name] for w, _ in fits])) for name in FEATURES},
        float(np.mean([b for _, b in fits])),
        0.5,
        True,
    )
    return mean, [scores[i] if i in scores else mean.probability(f) for i, f in enumerate(features)]


def _guarded(
    probabilities: list[float],
    answerable: list[bool],
    right: list[bool] | None,
    synthetic: list[bool] | None,
) -> tuple[list[float], bool]:
    """The scores the false-refusal budget protects, and whether they are users' questions
    (the budget applies) rather than synthetic ones (the cut goes to their low end)."""
    own = _own(probabilities, answerable, right, synthetic)
    if len(own) < MIN_GUARDED:
        return [p for p, ok in zip(probabilities, answerable, strict=True) if ok], False
    kept = [p for p, r in own if r]
    return (kept if len(kept) >= MIN_GUARDED else [p for p, _ in own]), True


def _own(
    probabilities: list[float],
    answerable: list[bool],
    right: list[bool] | None,
    synthetic: list[bool] | None,
) -> list[tuple[float, bool]]:
    """(score, answered right) of each answerable question of the users' own."""
    marks = zip(
        answerable, right or answerable, synthetic or [False] * len(answerable), strict=True
    )
    return [(p, r) for p, (ok, r, s) in zip(probabilities, marks, strict=True) if ok and not s]


def _at(cut: float, probabilities: list[float], answerable: list[bool]) -> dict:
    """Share of answerable questions answered and unanswerable refused at ``cut``."""
    answered = [p >= cut for p in probabilities]
    pos = [a for a, ok in zip(answered, answerable, strict=True) if ok]
    neg = [not a for a, ok in zip(answered, answerable, strict=True) if not ok]
    return {
        "threshold": cut,
        "answered": round(sum(pos) / (len(pos) or 1), 4),
        "refused": round(sum(neg) / (len(neg) or 1), 4),
    }

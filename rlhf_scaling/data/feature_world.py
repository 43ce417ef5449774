"""A second synthetic world, built for scaling studies (task.world=features; issue 14).

The first world (rlhf_scaling/data/synthetic.py: 8 topics, ~240 distinct prompts, a gold of a few
hand-written rules) shows the Gao et al. curves but is too poor for *scaling* to show. This one
follows the toy models of neural scaling (Michaud et al. 2023, "quantization model"; Hutter 2021):

- **prompts** are `prompt_length` tokens drawn from `prompt_vocab` prompt words (`q0 q17 q3 q42`):
  16⁴ = 65,536 distinct prompts at the default; training prompts are drawn with replacement, and
  the held-out (and validation) prompts among those no training prompt is (sample_unseen_prompts);
- **responses** are words of `response_vocab` response words (`w0 .. w63`), ended by EOS;
- **gold** is a sum of `n_features` features with Zipf-distributed weights w_k ∝ k^-a and random
  signs, half "response words x and y both present", half "prompt word u present and response
  word t present" (what is good depends on the prompt). Every presence is **mean-centred**,
  (1[x] − p)(1[y] − p), by the probability p = d/V of a word being among the text's d distinct
  words (V words in all): the centred presences of a text sum to 0, so neither a single word nor
  the length carries feature signal on its own (raw presence features leak: a one-word linear
  model scores ~0.79 on them; centring by one global p still leaks through length). A bigger
  RM or more data learns more of the tail: that is what should move accuracy with size and data.
  The feature part is scaled to unit standard deviation over demonstrations;
- **exploitable directions**, which demonstrations rarely show: repeated words (−`REPEAT_PENALTY`
  each), words beyond `natural_length` (−`LENGTH_PENALTY` each), not ending (−1). A proxy that
  learned "more of the good words" pushes a policy into long, repetitive answers that gold dislikes.

A feasibility probe outside the project (shared/DESIGN.md §4) put the needed data at ≥ 32k
comparisons for the interactions to be learnable; the measured tables are in docs/world.md.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Set, Tuple

import torch

from rlhf_scaling.data.synthetic import EOS, PAD, UNK

REPEAT_PENALTY = 1.0  # gold points per repeated word
LENGTH_PENALTY = 0.5  # gold points per word beyond natural_length
UNFINISHED_PENALTY = 1.0  # a response that hit the token budget without EOS
SHORT_PENALTY = 1.0  # gold points per word short of min_length
WORLD_SEED = 1234  # the features, weights and signs: fixed, so a world is named by its parameters alone


@dataclass(frozen=True)
class FeatureTask:
    """The words of the feature world and its gold's features (built by `make_feature_task`).

    pair_weights: (R, R) upper-triangular weights of "x and y both in the response";
    prompt_weights: (P, R) weights of "u in the prompt and t in the response";
    scale: divides the feature sum to unit std over demonstrations."""

    prompt_words: Tuple[str, ...]
    response_words: Tuple[str, ...]
    prompt_length: int
    natural_length: int
    max_response_tokens: int
    pair_weights: torch.Tensor
    prompt_weights: torch.Tensor
    scale: float
    min_length: int = 0  # gold subtracts SHORT_PENALTY per word short of this

    @property
    def vocabulary(self) -> List[str]:
        return [PAD, EOS, UNK, *self.prompt_words, *self.response_words]


def zipf_weights(n: int, exponent: float, rng: torch.Generator) -> torch.Tensor:
    """(n,) weights k^-exponent for k = 1..n with random signs (the rank-1 feature is the largest)."""
    signs = torch.randint(0, 2, (n,), generator=rng).float() * 2 - 1
    return signs * torch.arange(1, n + 1, dtype=torch.float64).pow(-exponent).float()


def make_feature_task(*, prompt_vocab: int, response_vocab: int, prompt_length: int, n_features: int,
                      zipf_exponent: float, natural_length: int, max_response_tokens: int,
                      min_length: int = 0) -> FeatureTask:
    """The world for these parameters (features drawn from WORLD_SEED: same parameters, same world)."""
    rng = torch.Generator().manual_seed(WORLD_SEED)
    n_pair = n_features // 2
    weights = zipf_weights(n_features, zipf_exponent, rng)
    order = torch.randperm(n_features, generator=rng)  # which ranks are pair, which prompt features
    pair_w, prompt_w = weights[order[:n_pair]], weights[order[n_pair:]]
    pairs = torch.triu_indices(response_vocab, response_vocab, offset=1)  # (2, R(R-1)/2)
    chosen = torch.randperm(pairs.shape[1], generator=rng)[:n_pair]
    pair_weights = torch.zeros(response_vocab, response_vocab)
    pair_weights[pairs[0, chosen], pairs[1, chosen]] = pair_w[:len(chosen)]
    cells = torch.randperm(prompt_vocab * response_vocab, generator=rng)[:len(prompt_w)]
    prompt_weights = torch.zeros(prompt_vocab * response_vocab)
    prompt_weights[cells] = prompt_w
    task = FeatureTask(
        tuple(f"q{i}" for i in range(prompt_vocab)), tuple(f"w{i}" for i in range(response_vocab)), prompt_length,
        natural_length, max_response_tokens, pair_weights, prompt_weights.view(prompt_vocab, response_vocab), scale=1.0,
        min_length=min_length)
    prompts, demos = sample_demonstrations(task, 4000, seed=WORLD_SEED)
    std = feature_scores(task, prompts, demos).std().item()
    return FeatureTask(**{**task.__dict__, "scale": std})


def sample_prompts(task: FeatureTask, n: int, rng: random.Random) -> List[str]:
    """n prompts of task.prompt_length prompt words each, drawn uniformly with replacement."""
    return [" ".join(rng.choices(task.prompt_words, k=task.prompt_length)) for _ in range(n)]


def sample_unseen_prompts(task: FeatureTask, n: int, rng: random.Random, seen: Set[str]) -> List[str]:
    """n prompts drawn like sample_prompts but none of them in `seen` (the training prompts): held-out
    prompts, so an RM's held-out accuracy measures generalisation to prompts it never trained on
    (drawn independently, ~4-8% of them were training prompts at the default budgets). ValueError
    when n > 0 and `seen` holds every prompt of the world."""
    if n and len(seen) >= len(task.prompt_words) ** task.prompt_length:
        raise ValueError(f"every one of the world's {len(task.prompt_words) ** task.prompt_length} prompts is a "
                         "training (or held-out) prompt: none is left to hold out (raise task.prompt_vocab or lower the "
                         "budget)")
    out: List[str] = []
    while len(out) < n:
        prompt = " ".join(rng.choices(task.prompt_words, k=task.prompt_length))
        if prompt not in seen:
            out.append(prompt)
    return out


def sample_demonstration(task: FeatureTask, rng: random.Random) -> str:
    """One SFT demonstration: 2 .. natural_length + 1 distinct response words, uniform, and with
    probability 0.03 per word a repeat of an earlier one: the penalised directions (repeats, words
    beyond natural_length) are rare but not unseen, so gold's preferences in the demonstrations come
    mostly from the features and a proxy learns little of the penalties."""
    length = rng.randint(2, task.natural_length + 1)
    words = rng.sample(task.response_words, length)
    words = [rng.choice(words[:i]) if i and rng.random() < 0.03 else w for i, w in enumerate(words)]
    return " ".join(words)


def sample_demonstrations(task: FeatureTask, n: int, seed: int) -> Tuple[List[str], List[str]]:
    """n (prompt, demonstration) pairs from a seeded generator (demonstrations ignore the prompt:
    the SFT policy knows the language, not what gold prefers)."""
    rng = random.Random(seed)
    prompts = sample_prompts(task, n, rng)
    return prompts, [sample_demonstration(task, rng) for _ in prompts]


def centred_presence(texts: List[str], words: Tuple[str, ...]) -> torch.Tensor:
    """(B, V) 1[word in text] − d/V, d the text's distinct words of `words` (V of them): each row sums to 0."""
    x = presence(texts, words)
    return x - x.sum(1, keepdim=True) / len(words)


def presence(texts: List[str], words: Tuple[str, ...]) -> torch.Tensor:
    """(B, len(words)) float 0/1: which of `words` each text contains (other words are ignored)."""
    index = {w: i for i, w in enumerate(words)}
    out = torch.zeros(len(texts), len(words))
    for b, text in enumerate(texts):
        ids = [index[w] for w in text.split() if w in index]
        if ids:
            out[b, ids] = 1.0
    return out


def feature_scores(task: FeatureTask, prompts: List[str], responses: List[str]) -> torch.Tensor:
    """(B,) the Zipf feature part of gold, in units of its std over demonstrations:
    Σ_pairs w (x − p)(y − p) + Σ_(u,t) w (u − q)(t − p), on centred presences."""
    r = centred_presence(responses, task.response_words)  # (B, R)
    u = centred_presence(prompts, task.prompt_words)  # (B, P)
    pair = ((r @ task.pair_weights) * r).sum(1)
    conditioned = ((u @ task.prompt_weights) * r).sum(1)
    return (pair + conditioned) / task.scale

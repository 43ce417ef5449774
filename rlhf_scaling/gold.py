"""Gold rewards: the stand-in for human judgement. One interface, two implementations.

`score(prompts, responses) -> Tensor (B,)` of floats, one per (prompt, response) pair.
- `SyntheticGold`: programmatic, for the synthetic task (rlhf_scaling/data/synthetic.py).
- `FeatureGold`: programmatic, for the feature world (rlhf_scaling/data/feature_world.py).
- `ModelGold`: any sequence-classification reward model with one output, from a hub id or a local dir.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from rlhf_scaling.data import feature_world as FW
from rlhf_scaling.data.synthetic import FILLER, SyntheticTask
from rlhf_scaling.models import CheckpointMismatch, resolve_model


class SyntheticGold:
    """Gold reward of the synthetic task (units: "gold points", roughly 0 .. words_per_topic).

    gold = distinct on-topic words
           - 1.0 x repeated words           (any word said again)
           - 0.5 x off-topic words          (words of another topic)
           - 0.25 x filler words beyond one
           - 0.5 x words beyond natural_length
           - 1.0 if the response hit the token budget without ending
           - 0.01 x length                  (breaks most ties toward the shorter answer)

    A proxy trained on SFT samples mostly sees the first term, since the penalties are rare there.
    """

    def __init__(self, task: SyntheticTask):
        self.task = task
        self._topic_sets = [set(words) for words in task.topic_words]
        self._all_topic_words = set().union(*self._topic_sets)

    def score_one(self, prompt: str, response: str, ended: bool = True) -> float:
        words = response.split()
        own = self._topic_sets[self.task.topic_of_prompt(prompt)]
        distinct_on = len({w for w in words if w in own})
        repeats = len(words) - len(set(words))
        off_topic = sum(1 for w in words if w in self._all_topic_words and w not in own)
        filler = sum(1 for w in words if w in FILLER)
        excess = max(0, len(words) - self.task.natural_length)
        unfinished = 0 if ended and len(words) < self.task.max_response_tokens else 1
        return (
            distinct_on
            - 1.0 * repeats
            - 0.5 * off_topic
            - 0.25 * max(0, filler - 1)
            - 0.5 * excess
            - 1.0 * unfinished
            - 0.01 * len(words)
        )

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """(B,) float32 gold scores. A response of max_response_tokens words counts as unfinished."""
        if len(prompts) != len(responses):
            raise ValueError(f"gold.score: {len(prompts)} prompts but {len(responses)} responses")
        return torch.tensor([self.score_one(p, r) for p, r in zip(prompts, responses)], dtype=torch.float32)


class FeatureGold:
    """Gold reward of the feature world (task.world=features): the Zipf feature sum (unit std over
    demonstrations) minus its exploitable directions, which demonstrations rarely show:

    gold = features(prompt, response)
           - REPEAT_PENALTY x repeated words
           - LENGTH_PENALTY x words beyond natural_length
           - UNFINISHED_PENALTY if the response hit the token budget without ending
           - SHORT_PENALTY x words short of min_length (task.min_length; 0: none)
    """

    def __init__(self, task: FW.FeatureTask):
        self.task = task

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """(B,) float32 gold scores. A response of max_response_tokens words counts as unfinished."""
        if len(prompts) != len(responses):
            raise ValueError(f"gold.score: {len(prompts)} prompts but {len(responses)} responses")
        words = [r.split() for r in responses]
        repeats = torch.tensor([len(w) - len(set(w)) for w in words], dtype=torch.float32)
        excess = torch.tensor([max(0, len(w) - self.task.natural_length) for w in words], dtype=torch.float32)
        unfinished = torch.tensor([len(w) >= self.task.max_response_tokens for w in words], dtype=torch.float32)
        short = torch.tensor([max(0, self.task.min_length - len(w)) for w in words], dtype=torch.float32)
        features = FW.feature_scores(self.task, list(prompts), list(responses))
        return (features - FW.REPEAT_PENALTY * repeats - FW.LENGTH_PENALTY * excess
                - FW.UNFINISHED_PENALTY * unfinished - FW.SHORT_PENALTY * short).float()


class ModelGold:
    """A sequence-classification RM (num_labels=1) as gold, e.g. a large RM from the hub or a local dir.

    Its score head must come from the checkpoint: a causal LM (or a bare backbone) loads as a
    sequence classifier too, with a randomly initialised head, and would score random noise; that
    is refused, naming the path."""

    def __init__(self, name_or_path: str, *, batch_size: int = 64, device: str = "cpu",
                 trust_remote_code: bool = False, max_length: int = 1024, revision: Optional[str] = None):
        from transformers import AutoTokenizer

        local = resolve_model(name_or_path, revision, key="gold.name_or_path")
        self.tokenizer = AutoTokenizer.from_pretrained(local, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_scorer(local, trust_remote_code=trust_remote_code, where=name_or_path).to(device).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.device, self.max_length = batch_size, device, max_length

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """(B,) float32 scores: the model's single logit for prompt + response."""
        if len(prompts) != len(responses):
            raise ValueError(f"gold.score: {len(prompts)} prompts but {len(responses)} responses")
        out: List[torch.Tensor] = []
        for i in range(0, len(prompts), self.batch_size):
            texts = [p + " " + r for p, r in zip(prompts[i:i + self.batch_size], responses[i:i + self.batch_size])]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            out.append(logits[:, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0)


def load_scorer(directory: str, *, trust_remote_code: bool = False, where: Optional[str] = None):
    """AutoModelForSequenceClassification with ONE output from `directory`, refusing a checkpoint
    that lacks its score head (transformers would initialise the missing weights at random) or
    whose head has another number of outputs. Errors are CheckpointMismatch naming `where`."""
    from transformers import AutoModelForSequenceClassification

    from transformers.utils import logging as hf_logging

    where = where or directory
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its multi-line load report; the problem is reported below in one line
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            directory, num_labels=1, trust_remote_code=trust_remote_code, use_safetensors=True,
            output_loading_info=True)
    except RuntimeError as err:  # a head of another shape (num_labels != 1): size mismatch
        raise CheckpointMismatch(f"{where}: not a one-output reward model: {str(err).strip().splitlines()[-1][:200]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = list(info.get("missing_keys") or []) + list(info.get("mismatched_keys") or [])
    if missing:
        raise CheckpointMismatch(
            f"{where}: not a reward model: {', '.join(map(str, missing[:3]))} not in the checkpoint (a causal LM "
            f"or bare backbone gets a randomly initialised score head, so gold would be noise); give a model "
            f"saved with its trained head (AutoModelForSequenceClassification, num_labels=1)")
    return model

"""Reward pooling at the last real token, safetensors round trips, and the pretrained loading path."""

import pytest
import torch
from omegaconf import OmegaConf

from rlhf_scaling.data.encode import pad_batch
from rlhf_scaling.data.synthetic import build_tokenizer, make_task
from rlhf_scaling.models import (build_policy, build_reward_model, last_token_index, load_reward_model,
                                 load_tokenizer, save_policy, save_reward_model)

TINY = OmegaConf.create({"name": "t", "source": "tiny", "n_layer": 2, "d_model": 32, "n_head": 2,
                         "max_position": 64, "name_or_path": None, "revision": None, "trust_remote_code": False})


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(make_task(4, 6, 6, 16))


def test_last_token_index_both_padding_sides():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 4]
    with pytest.raises(ValueError):
        last_token_index(torch.tensor([[0, 0, 0]]))


def test_reward_is_read_at_last_real_token_under_left_and_right_padding(tok):
    torch.manual_seed(0)
    rm = build_reward_model(TINY, tok).eval()
    seqs = [[3, 7, 4, 12, 1], [3, 9, 4, 20, 21, 22, 1], [3, 8, 1]]
    ids_r, mask_r = pad_batch(seqs, tok.pad_token_id, "right")
    ids_l, mask_l = pad_batch(seqs, tok.pad_token_id, "left")
    alone = torch.stack([rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in seqs])
    with torch.no_grad():
        torch.testing.assert_close(rm(ids_r, mask_r), alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rm(ids_l, mask_l), alone, atol=1e-5, rtol=1e-5)
        # Reading at the last column (a PAD for short rows) would give a different value: the bug we avoid.
        hidden = rm.backbone(input_ids=ids_r, attention_mask=mask_r).last_hidden_state
        wrong = rm.head(hidden[:, -1]).squeeze(-1)
        assert not torch.allclose(wrong[[0, 2]], alone[[0, 2]], atol=1e-4)


def test_reward_model_round_trip_and_offset(tok, tmp_path):
    torch.manual_seed(1)
    rm = build_reward_model(TINY, tok)
    rm.offset.fill_(0.75)
    save_reward_model(rm, tmp_path / "rm", {"note": 1})
    back = load_reward_model(tmp_path / "rm")
    ids, mask = pad_batch([[3, 7, 4, 12, 1]], tok.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask), rm(ids, mask))
    assert (tmp_path / "rm" / "reward_model.safetensors").is_file()
    assert not list((tmp_path / "rm").glob("*.bin")) and not list((tmp_path / "rm").glob("*.pt"))


def test_checkpoint_with_wrong_shapes_is_a_clear_error(tok, tmp_path):
    save_reward_model(build_reward_model(TINY, tok), tmp_path / "small")
    bigger = OmegaConf.merge(TINY, {"d_model": 64})
    big = build_reward_model(bigger, tok)
    save_reward_model(big, tmp_path / "big")
    # Put the big weights next to the small config: shapes disagree.
    (tmp_path / "big" / "config.json").write_text((tmp_path / "small" / "config.json").read_text())
    with pytest.raises(ValueError, match="shape"):
        load_reward_model(tmp_path / "big")


def test_pretrained_path_loads_from_a_local_directory(tok, tmp_path):
    """The real loading path (hub id or local dir) exercised on a directory the test writes."""
    torch.manual_seed(2)
    policy = build_policy(TINY, tok)
    save_policy(policy, tok, tmp_path / "sft")
    spec = OmegaConf.merge(TINY, {"source": "pretrained", "name_or_path": str(tmp_path / "sft")})
    loaded = build_policy(spec, load_tokenizer(spec))
    ids = torch.tensor([[3, 7, 4, 12]])
    torch.testing.assert_close(loaded(ids).logits, policy(ids).logits)
    rm = build_reward_model(spec, load_tokenizer(spec))  # backbone from the same dir, fresh head
    sd = policy.gpt_neox.state_dict()
    for k, v in rm.backbone.state_dict().items():
        torch.testing.assert_close(v, sd[k])


def test_missing_model_path_is_a_clear_error(tok, tmp_path):
    spec = OmegaConf.merge(TINY, {"source": "pretrained", "name_or_path": str(tmp_path / "nope")})
    with pytest.raises(FileNotFoundError, match="nope"):
        build_policy(spec, tok)


def test_remote_code_in_a_model_folder_never_runs_unless_the_config_says_so(tok, tmp_path):
    """A model folder whose config points at its own Python code (auto_map): loading it with the
    default spec (trust_remote_code false) refuses, and the code is never imported."""
    import json

    torch.manual_seed(3)
    save_policy(build_policy(TINY, tok), tok, tmp_path / "evil")
    marker = tmp_path / "code_ran"
    (tmp_path / "evil" / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import GPTNeoXConfig, GPTNeoXForCausalLM\n"
        "class EvilConfig(GPTNeoXConfig):\n    model_type = 'evil'\n"
        "class EvilModel(GPTNeoXForCausalLM):\n    config_class = EvilConfig\n")
    config = json.loads((tmp_path / "evil" / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "modeling_evil.EvilConfig",
                                               "AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (tmp_path / "evil" / "config.json").write_text(json.dumps(config))
    spec = OmegaConf.merge(TINY, {"source": "pretrained", "name_or_path": str(tmp_path / "evil")})
    assert spec.trust_remote_code is False
    with pytest.raises(Exception, match="trust_remote_code"):
        build_policy(spec, tok)
    assert not marker.exists()


def test_a_proxy_rm_without_its_head_is_refused_naming_the_folder(tok, tmp_path):
    """Best-of-n and PPO load proxies with load_reward_model: a checkpoint missing the head (which
    would otherwise start from a fresh random init) is an error naming the folder."""
    from safetensors.torch import load_file, save_file

    from rlhf_scaling.models import CheckpointMismatch

    save_reward_model(build_reward_model(TINY, tok), tmp_path / "rm")
    weights = tmp_path / "rm" / "reward_model.safetensors"
    save_file({k: v for k, v in load_file(str(weights)).items() if not k.startswith("head.")}, str(weights))
    with pytest.raises(CheckpointMismatch, match=rf"{tmp_path / 'rm'}.*missing \['head.bias', 'head.weight'\]"):
        load_reward_model(tmp_path / "rm")


def test_hub_ids_resolve_through_the_cache_and_offline_is_one_line(tok, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE with an empty cache: ModelUnavailable (a FileNotFoundError, one line at the
    CLI) naming the model and the key to point at a local directory; a local dir is itself."""
    import huggingface_hub.constants as hub_constants

    from rlhf_scaling.models import ModelUnavailable, model_identity, resolve_model

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelUnavailable, match=r"'org/model' \(revision v1\).*HF_HUB_OFFLINE.*set rm.name_or_path="):
        resolve_model("org/model", "v1", key="rm.name_or_path")
    save_policy(build_policy(TINY, tok), tok, tmp_path / "dir")
    assert resolve_model(str(tmp_path / "dir")) == str(tmp_path / "dir")
    assert set(model_identity(str(tmp_path / "dir"))) == {"files_sha256"}

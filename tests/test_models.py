import pytest
import torch
import torch.nn.functional as F

from torch import nn

from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.models import (EmbeddingMLP, NandaTransformer, Transformer, accuracy, answer_loss,
                                           build_model, evaluate, toeplitz_embedding)
from neuralgrok.experiments.tasks import token_layout


def small_model(depth=2, width=32, heads=4, seed=0):
    torch.manual_seed(seed)
    return Transformer(vocab_size=13, num_classes=11, sequence_length=4, width=width, depth=depth, heads=heads)


def random_inputs(n=16, seed=1):
    return torch.randint(0, 13, (n, 4), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("depth", [1, 3])
def test_output_shapes(depth):
    model = small_model(depth=depth)
    inputs = random_inputs()
    assert model(inputs).shape == (16, 11)
    assert model.hidden_states(inputs).shape == (16, 4, 32)
    assert len(model.blocks) == depth
    assert model.head.bias is None and model.head.out_features == 11


def test_later_tokens_do_not_change_earlier_positions():
    model = small_model()
    inputs = random_inputs()
    for position in range(4):
        changed = inputs.clone()
        changed[:, position] = (changed[:, position] + 1) % 13
        before, after = model.hidden_states(inputs), model.hidden_states(changed)
        torch.testing.assert_close(after[:, :position], before[:, :position], rtol=0, atol=0)
        # ...while the changed position and every later one do see it.
        for later in range(position, 4):
            assert not torch.allclose(after[:, later], before[:, later])


def test_logits_are_the_last_positions_readout():
    model = small_model()
    inputs = random_inputs()
    torch.testing.assert_close(model(inputs), model.head(model.hidden_states(inputs)[:, -1]))


def test_loss_is_on_the_answer_only():
    model = small_model()
    inputs, labels = random_inputs(), torch.arange(16) % 11
    loss, logits = answer_loss(model, inputs, labels)
    expected = F.cross_entropy(model.head(model.hidden_states(inputs)[:, -1]), labels)
    torch.testing.assert_close(loss, expected)
    assert logits.shape == (16, 11)  # one prediction per example: nothing to score at other positions


def test_evaluate_is_one_no_grad_pass_and_keeps_the_mode():
    model = small_model()
    inputs = random_inputs(n=40)
    labels = model(inputs).argmax(-1).detach()
    labels[:10] = (labels[:10] + 1) % 11  # exactly 30 of 40 right
    model.train()
    loss, acc = evaluate(model, inputs, labels)
    assert acc == pytest.approx(0.75)
    assert loss == pytest.approx(answer_loss(model, inputs, labels)[0].item(), rel=1e-5)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert accuracy(torch.eye(3), torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def test_width_must_split_into_heads():
    with pytest.raises(ValueError, match="divisible"):
        small_model(width=30, heads=4)


def nanda_model(**kwargs):
    torch.manual_seed(0)
    return NandaTransformer(vocab_size=14, num_classes=13, sequence_length=3, width=32, heads=4, mlp_width=64,
                            **kwargs)


def nanda_inputs(n=16):
    return torch.randint(0, 14, (n, 3), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("depth", [1, 2])
def test_nanda_transformer_shapes_and_no_layernorm(depth):
    model = nanda_model(depth=depth)
    inputs = nanda_inputs()
    assert model(inputs).shape == (16, 13)
    torch.testing.assert_close(model(inputs), model.head(model.hidden_states(inputs)[:, -1]))
    assert len(model.blocks) == depth
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    attention = model.blocks[0].attention
    assert all(layer.bias is None for layer in (attention.query, attention.key, attention.value, attention.out))
    assert model.blocks[0].mlp[0].out_features == 64 and isinstance(model.blocks[0].mlp[1], nn.ReLU)


def _matmul_rows_are_independent() -> bool:
    """Whether this build's matrix multiply gives a row the same bits whatever the number of rows: torch
    2.13.0's CPU build (oneDNN/MKL) does at these sizes, Debian's torch 1.13 (OpenBLAS) does not."""
    layer = nn.Linear(128, 128, bias=False)
    x = torch.randn(2048, 3, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return torch.equal(layer(x)[:, -1:], layer(x[:, -1:])) and torch.equal(layer(x)[:7], layer(x[:7]))


@pytest.mark.parametrize("depth", [1, 2])
def test_nanda_evaluation_reads_out_the_last_position_only_with_the_same_logits_bit_for_bit(depth):
    # At the base run's size (p = 97, 2 x 128, MLP 512) and in evaluation chunks: without autograd the last block
    # computes only the read-out position, and the logits are those of the full sequence: bit for bit where the
    # matrix multiply's rows do not depend on how many there are, within float32 rounding elsewhere.
    torch.manual_seed(0)
    model = NandaTransformer(vocab_size=98, num_classes=97, sequence_length=3, width=128, depth=depth)
    inputs = torch.randint(0, 97, (3000, 3), generator=torch.Generator().manual_seed(1))
    inputs[:, 2] = 97
    with torch.no_grad():
        full = model.head(model.hidden_states(inputs)[:, -1])
        chunked = torch.cat([model(chunk) for chunk in inputs.split(2048)])
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)
    if _matmul_rows_are_independent():
        assert torch.equal(chunked, full)
    # A training forward runs every position (the gradients keep their summation order): a counted call.
    calls = []
    model.blocks[-1].mlp.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[1]))
    model(inputs[:4]).sum().backward()
    with torch.no_grad():
        model(inputs[:4])
    assert calls == [3, 1]


def test_nanda_train_last_position_only_computes_the_read_out_alone_with_the_full_forwards_gradients():
    # train_last_position_only (Gu et al.'s p = 97 configs): a training forward's last block computes only the
    # read-out position, and every parameter's gradient is the full sequence's to float32 rounding (the same
    # maths; the sums skip the unread positions' zero terms). The same seed draws the same model either way.
    inputs = torch.randint(0, 97, (600, 3), generator=torch.Generator().manual_seed(1))
    inputs[:, 2] = 97
    labels = torch.randint(0, 97, (600,), generator=torch.Generator().manual_seed(2))
    gradients, calls = [], []
    for last_only in (False, True):
        torch.manual_seed(0)
        model = NandaTransformer(vocab_size=98, num_classes=97, sequence_length=3, width=128, depth=2,
                                 train_last_position_only=last_only)
        model.blocks[-1].mlp.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[1]))
        F.cross_entropy(model(inputs), labels).backward()
        gradients.append({name: parameter.grad for name, parameter in model.named_parameters()})
    assert calls == [3, 1]
    full, last_only = gradients
    assert full.keys() == last_only.keys()
    for name in full:
        torch.testing.assert_close(last_only[name], full[name], rtol=1e-4, atol=1e-6, msg=name)
    assert all(full[name].abs().max() > 1e-4 for name in full)  # no gradient compared is all zeros


def test_the_train_last_position_only_field_reaches_the_nanda_model():
    layout = token_layout("a+b", 97, "nanda")
    for value in (False, True):
        config = TrainConfig(model="nanda", layout="nanda", train_last_position_only=value)
        assert build_model(config, layout, 3).train_last_position_only is value


def test_nanda_transformer_init_is_gaussian_over_root_width_times_scale():
    torch.manual_seed(0)
    model = NandaTransformer(vocab_size=100, num_classes=97, sequence_length=3, init_scale=2.0)
    for name, parameter in model.named_parameters():
        if parameter.dim() >= 2:
            assert parameter.std().item() == pytest.approx(2.0 / 128 ** 0.5, rel=0.1), name
        else:
            assert not parameter.any(), name


def test_nanda_transformer_is_causal():
    model = nanda_model()
    inputs = nanda_inputs()
    changed = inputs.clone()
    changed[:, 2] = (changed[:, 2] + 1) % 14
    torch.testing.assert_close(model.hidden_states(changed)[:, :2], model.hidden_states(inputs)[:, :2])


def test_embedding_mlp_shapes():
    torch.manual_seed(0)
    model = EmbeddingMLP(vocab_size=98, num_classes=97)
    assert model(torch.randint(0, 98, (5, 3))).shape == (5, 97)
    assert [layer.in_features for layer in model.mlp if isinstance(layer, nn.Linear)] == [384, 512, 512]


@pytest.mark.parametrize("make", [
    lambda **kw: NandaTransformer(14, 13, 3, width=32, **kw),
    lambda **kw: EmbeddingMLP(14, 13, width=32, **kw),
    lambda **kw: Transformer(14, 13, 3, width=32, **kw),
])
def test_onehot_embedding_is_identity_and_stays_frozen(make):
    model = make(embedding="onehot_fixed", init_scale=3.0)
    weight = model.token_embedding.weight
    assert torch.equal(weight, torch.eye(14, 32)) and not weight.requires_grad
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=1.0)
    answer_loss(model, nanda_inputs(), torch.arange(16) % 13)[0].backward()
    optimizer.step()
    assert weight.grad is None and torch.equal(weight, torch.eye(14, 32))


def test_onehot_embedding_needs_width_at_least_vocabulary():
    with pytest.raises(ValueError, match="width >= vocabulary"):
        EmbeddingMLP(vocab_size=40, num_classes=13, width=32, embedding="onehot_fixed")


def test_toeplitz_embedding_formula():
    width, vocab, seed = 8, 5, 3
    r = torch.rand(width, generator=torch.Generator().manual_seed(seed))
    # W_E = T[:, :vocab] / sqrt(d) with T[i, j] = r[|i - j|]; the embedding weight is W_E transposed.
    expected = torch.tensor([[r[abs(i - j)].item() for j in range(vocab)] for i in range(width)]) / width ** 0.5
    torch.testing.assert_close(toeplitz_embedding(vocab, width, seed), expected.T)
    model = NandaTransformer(vocab, 5, 3, width=width, heads=2, embedding="toeplitz", embedding_seed=seed)
    torch.testing.assert_close(model.token_embedding.weight, expected.T)
    assert model.token_embedding.weight.requires_grad


def test_transformer_default_embedding_and_scale_are_unchanged():
    torch.manual_seed(0)
    default = Transformer(13, 11, 4, width=32)
    torch.manual_seed(0)
    explicit = Transformer(13, 11, 4, width=32, init_scale=1.0, embedding=None)
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), explicit.parameters()))
    torch.manual_seed(0)
    scaled = Transformer(13, 11, 4, width=32, init_scale=0.5)
    torch.testing.assert_close(scaled.head.weight, 0.5 * default.head.weight)
    torch.testing.assert_close(scaled.final_norm.weight, default.final_norm.weight)  # vectors unscaled


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, inputs):
        return self.logits


def test_mse_loss_on_a_hand_case():
    model = FixedLogits(torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 2.0]]))
    loss, _ = answer_loss(model, None, torch.tensor([0, 2]), loss="mse")
    # Targets [[1, 0, 0], [0, 0, 1]]: squared errors 0, 0, 0, 0.25, 0, 1 over 6 entries.
    assert loss.item() == pytest.approx(1.25 / 6)
    assert evaluate(model, None, torch.tensor([0, 2]), loss="mse") == (pytest.approx(1.25 / 6), 1.0)
    with pytest.raises(ValueError, match="unknown loss"):
        answer_loss(model, None, torch.tensor([0, 2]), loss="l1")


def test_official_block_overwrites_the_residual_stream_with_ln1():
    # NeuralGrok's official block: x = LN1(x); x = x + attn(x); x = x + mlp(LN2(x)), written out here.
    torch.manual_seed(0)
    model = Transformer(vocab_size=13, num_classes=11, sequence_length=4, width=16, depth=2, heads=4,
                        block="official")
    inputs = random_inputs()
    x = model.token_embedding(inputs) + model.position_embedding(torch.arange(4))
    mask = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    for block in model.blocks:
        x = block.attention_norm(x)
        x = x + block.attention(x, x, x, attn_mask=mask, need_weights=False)[0]
        x = x + block.mlp(block.mlp_norm(x))
    want = model.head(model.final_norm(x)[:, -1])
    torch.testing.assert_close(model(inputs), want)
    torch.testing.assert_close(model.head(model.hidden_states(inputs)[:, -1]), want)
    # Same parameters as the standard block, different function.
    standard = Transformer(vocab_size=13, num_classes=11, sequence_length=4, width=16, depth=2, heads=4)
    standard.load_state_dict(model.state_dict())
    assert not torch.allclose(standard(inputs), want)
    with pytest.raises(ValueError, match="block variant"):
        Transformer(13, 11, 4, width=16, heads=4, block="postnorm")

import pytest
import torch
import torch.nn.functional as F

from neuralgrok.models import Transformer, accuracy, answer_loss, evaluate


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

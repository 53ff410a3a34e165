"""neuralgrok.experiments.plots.draw_groups: a colour per group, a line per run, one legend entry per group."""
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from neuralgrok.experiments import plots


def history(scale):
    return [{"step": step, "test_accuracy": scale * step, "epoch": step / 4} for step in (0, 10, 20)]


def drawn(axes):
    """(legend label or None, colour, x, y) of each line; matplotlib names unlabelled lines "_..."."""
    return [(None if line.get_label().startswith("_") else line.get_label(), to_hex(line.get_color()),
             list(line.get_xdata()), list(line.get_ydata())) for line in axes.get_lines()]


def test_draw_groups_draws_a_line_per_run_in_its_groups_colour_without_step_zero():
    axes = Figure().add_subplot()
    plots.draw_groups(axes, {"a": [history(1), history(2)], "b": [history(3)]})
    c0, c1 = to_hex("C0"), to_hex("C1")
    assert drawn(axes) == [("a", c0, [10, 20], [10, 20]), (None, c0, [10, 20], [20, 40]),
                           ("b", c1, [10, 20], [30, 60])]
    assert [text.get_text() for text in axes.legend().get_texts()] == ["a", "b"]


def test_draw_groups_takes_colours_and_another_x_column():
    axes = Figure().add_subplot()
    plots.draw_groups(axes, {"test": [history(1)]}, x="epoch", colors=["red"])
    assert drawn(axes) == [("test", to_hex("red"), [2.5, 5.0], [10, 20])]
    with pytest.raises(ValueError, match="1 colors for 2 groups"):
        plots.draw_groups(axes, {"a": [], "b": []}, colors=["red"])

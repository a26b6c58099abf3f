"""What a cell reads and binds, found without running it."""

from labrun.kernel_magics.analysis import cell_names


def test_reads_only_what_the_cell_takes_from_the_notebook() -> None:
    names = cell_names(
        "import math\n"
        "model = build(size)\n"  # model is the cell's own from here on
        "def step(x):\n"
        "    local = x * scale\n"
        "    return helper(local)\n"
        "total += step(model)\n"
        "print([q for q in items], math.pi, In, _)\n"
    )
    assert names.reads == ["build", "helper", "items", "print", "scale", "size", "total"]
    assert names.assigns == ["math", "model", "step", "total"]


def test_a_name_read_before_it_is_assigned_is_shipped() -> None:
    names = cell_names("x = x + 1\ny = 2\n")
    assert names.reads == ["x"]
    assert names.assigns == ["x", "y"]

"""executions.compare.json_diff: the differences of two JSON values, by path."""

from executions.compare import Change, json_diff


def changes(old, new, **kw):
    return [(c.path, c.kind, c.old, c.new) for c in json_diff(old, new, **kw).changes]


def test_equal_values_have_no_difference():
    value = {"a": [1, {"b": None}], "c": "x"}
    diff = json_diff(value, {"c": "x", "a": [1, {"b": None}]})
    assert diff.same
    assert diff.changes == []


def test_it_lists_added_removed_and_changed_keys_by_path():
    old = {"order": {"id": 7, "items": [{"sku": "A"}, {"sku": "B"}]}, "gone": True}
    new = {"order": {"id": 8, "items": [{"sku": "A"}, {"sku": "C"}, {"sku": "D"}]}, "new": 1}
    # Keys in alphabetical order, whatever order the objects hold them in.
    assert changes(old, new) == [
        ("gone", "removed", True, None),
        ("new", "added", None, 1),
        ("order.id", "changed", 7, 8),
        ("order.items[1].sku", "changed", "B", "C"),
        ("order.items[2]", "added", None, {"sku": "D"}),
    ]
    reordered = {"new": 1, "order": {"items": new["order"]["items"], "id": 8}}
    assert changes(dict(reversed(old.items())), reordered) == changes(old, new)


def test_keys_that_are_not_plain_names_are_quoted():
    assert changes({"headers": {"Content-Type": "a"}}, {"headers": {"Content-Type": "b"}}) == [
        ('headers["Content-Type"]', "changed", "a", "b")
    ]
    assert changes({"a b": 1}, {}) == [('["a b"]', "removed", 1, None)]


def test_a_change_of_type_is_one_change_of_the_whole_value():
    assert changes({"a": {"b": 1}}, {"a": [1]}) == [("a", "changed", {"b": 1}, [1])]
    assert changes(None, {"x": 1}) == [("", "changed", None, {"x": 1})]


def test_numbers_compare_as_json_numbers_but_true_is_not_one():
    assert json_diff({"n": 1}, {"n": 1.0}).same
    assert changes({"n": 1}, {"n": True}) == [("n", "changed", 1, True)]
    assert changes({"n": "1"}, {"n": 1}) == [("n", "changed", "1", 1)]


def test_past_the_limit_the_changes_are_counted_not_listed():
    diff = json_diff({}, {f"k{i}": i for i in range(10)}, limit=3)
    assert len(diff.changes) == 3
    assert diff.more == 7
    assert diff.total == 10
    assert not diff.same


def test_a_deeply_nested_value_changes_as_a_whole_below_the_depth_limit():
    # Deeper than the database's and the API's JSON parsers take (about 1000) cannot be stored.
    old, new = 1, 2
    for _ in range(800):
        old, new = {"a": old}, {"a": new}
    diff = json_diff(old, new)
    [change] = diff.changes
    assert change.path == ".".join(["a"] * 32)
    assert change.kind == "changed"


def test_the_texts_show_the_values_as_json_and_nothing_for_the_missing_side():
    added = Change("x", Change.ADDED, new={"é": 1})
    assert added.old_text == ""
    assert added.new_text == '{\n  "é": 1\n}'
    assert Change("", Change.CHANGED, old=1, new=2).where == "(the whole value)"
    assert added.as_dict() == {"path": "x", "change": "added", "new": {"é": 1}}

"""byol.data.sizes.Sizes: resolved once from what was asked and the data, read back from what a run stored."""

from byol.data.sizes import Sizes


def test_the_views_are_the_asked_size_else_the_images():
    assert Sizes.resolve(decode=None, view=None, images=28) == Sizes(decode=None, images=28, view=28)
    assert Sizes.resolve(decode=32, view=24, images=32) == Sizes(decode=32, images=32, view=24)


def test_stored_sizes_come_first_then_an_old_runs_config():
    new = Sizes(decode=None, images=20, view=20)
    asked = {"data": {"image_size": None, "view_size": None}}  # a new run's config: what the user asked
    assert Sizes.stored({"sizes": new.to_dict()}, asked) == new
    # written before sizes were stored: the config's view_size held the resolved size
    old = {"data": {"image_size": 32, "view_size": 24}}
    assert Sizes.stored({}, old) == Sizes(decode=32, images=None, view=24)
    assert Sizes.stored(None, {"data": {"image_size": 32, "view_size": None}}).view == 32
    assert Sizes.stored(None, asked) is None  # nothing says: the caller falls back to the images' size

"""vidanim.images: each refusal names its rule and the value found; good images pass untouched."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.support import images
from tests.support.image_cases import REFUSED
from vidanim.errors import InvalidInput
from vidanim.images import DEFAULT_RULES, PROVIDER_RULES, check_image, probe_size, rules_for


@pytest.mark.parametrize(("name", "data", "message"), REFUSED)
def test_each_bad_image_is_refused_naming_the_rule_and_the_value(name, data, message):
    with pytest.raises(InvalidInput) as info:
        check_image(data, name, size_limit=10 * 1024 * 1024)
    assert info.value.message.startswith(message)


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("cat.png", images.png(), "image/png"),
        ("cat.jpg", images.jpeg(), "image/jpeg"),
        ("cat.JPEG", images.jpeg(1024, 576), "image/jpeg"),
        ("cat.webp", images.webp(720, 1280), "image/webp"),
        ("edge.png", images.png(300, 600), "image/png"),
    ],
)
def test_good_images_pass_unchanged_with_their_real_content_type(name, data, content_type):
    checked = check_image(data, name)
    assert checked.data == data
    assert checked.content_type == content_type
    assert not checked.converted


def test_a_cmyk_jpeg_is_converted_to_rgb_before_upload():
    data = images.jpeg(mode="CMYK")
    checked = check_image(data, "print.jpg")
    assert checked.converted
    assert checked.content_type == "image/jpeg"
    with Image.open(io.BytesIO(checked.data)) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (640, 480))


def test_the_bucket_limit_applies_when_it_is_below_the_providers():
    data = images.noise_png(400, 400)
    with pytest.raises(InvalidInput, match=r"the limit is 0\.1 MB"):
        check_image(data, "a.png", size_limit=100_000)


def test_the_bucket_types_apply():
    with pytest.raises(InvalidInput, match="image/webp is not accepted by the input bucket"):
        check_image(images.webp(), "a.webp", allowed_types=["image/png", "image/jpeg"])


def test_rules_are_what_every_configured_provider_accepts():
    assert rules_for(["fal"]) == PROVIDER_RULES["fal"]
    both = rules_for(["fal", "runway"])
    assert (both.min_aspect, both.max_aspect, both.max_bytes) == (0.5, 2.0, 10_000_000)
    assert both == DEFAULT_RULES
    # An image fal takes and Runway does not: accepted with fal alone, refused with both.
    check_image(images.png(1100, 500), "a.png", rules=rules_for(["fal"]))
    with pytest.raises(InvalidInput, match=r"aspect 2\.20"):
        check_image(images.png(1100, 500), "a.png", rules=both)
    assert PROVIDER_RULES["fal"].accepts(1100, 500)
    assert not PROVIDER_RULES["runway"].accepts(1100, 500)


def test_probe_reads_the_size_from_the_first_bytes():
    data = images.noise_png(900, 700)
    assert probe_size(data[:4096]) == (900, 700)
    assert probe_size(b"not an image") is None


def test_an_image_exactly_at_the_buckets_size_limit_is_accepted_and_one_byte_over_refused():
    data = images.png(400, 400)
    assert check_image(data, "a.png", size_limit=len(data)).data == data
    with pytest.raises(InvalidInput) as info:
        check_image(data, "a.png", size_limit=len(data) - 1)
    assert f"({len(data):,} bytes)" in info.value.message

"""The whole school day of test_school_day.py on Mosquitto and PostgreSQL: the same tests, its own module so the
two days can be played side by side (scripts/test, `-n 2 --dist loadfile`)."""

from tests.e2e.test_school_day import (  # noqa: F401 (collected here too)
    day_fixture,
    pytestmark,
    test_a_school_day_is_in_the_records_as_it_happened,
    test_every_console_page_shows_the_day_in_a_browser,
)

day = day_fixture("mosquitto-postgresql")

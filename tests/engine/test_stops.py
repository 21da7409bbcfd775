"""StopMatcher: stop strings split across chunks, and no partial stop text leaking out."""

from llamabridge.engine import StopMatcher


def run(stops, chunks):
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(c) for c in chunks) + matcher.flush()
    return out, matcher.matched


def test_no_stops_passes_through():
    assert run([], ["a", "b"]) == ("ab", None)


def test_stop_inside_one_chunk():
    assert run(["END"], ["hello END world"]) == ("hello ", "END")


def test_stop_split_across_chunks_never_leaks_prefix():
    matcher = StopMatcher(["</answer>"])
    emitted = []
    for chunk in ["The answer", " is 4</", "ans", "wer> trailing"]:
        emitted.append(matcher.feed(chunk))
    assert "".join(emitted) == "The answer is 4"
    assert all("<" not in e for e in emitted)
    assert matcher.matched == "</answer>"
    assert matcher.feed("more") == ""


def test_held_text_released_when_stop_does_not_complete():
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("ST") == ""
    assert matcher.feed("AR") == "STAR"
    assert matcher.feed("S") == ""
    assert matcher.flush() == "S"
    assert matcher.matched is None


def test_earliest_of_several_stops_wins():
    assert run(["bb", "a"], ["xxbbya"]) == ("xx", "bb")
    assert run(["world", "lo w"], ["hello world"]) == ("hel", "lo w")


def test_overlapping_prefixes():
    # "aab" must be found even though "aa" looked like a prefix first
    assert run(["aab"], ["a", "a", "a", "b", "c"]) == ("a", "aab")


def test_a_character_cut_at_the_end_is_dropped_not_replaced():
    from llamabridge.engine.pieces import PieceDecoder

    decoder = PieceDecoder()
    snowman = "☃".encode()
    assert decoder.feed(b"ok " + snowman[:1]) == "ok "
    assert decoder.feed(snowman[1:]) == "☃"               # completed by the next token
    assert decoder.feed(b"\xff") == "\ufffd"               # invalid bytes stay visible
    assert decoder.feed("é".encode()[:1]) == ""
    assert decoder.finish() == 1                           # max_tokens hit mid-character: dropped
    assert decoder.feed(b"x") == "x"

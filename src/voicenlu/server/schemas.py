"""Request and response bodies, and Rasa's /model/parse shape."""

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from voicenlu.errors import InputError
from voicenlu.runtime import check_text
from voicenlu.values import reference

# Rasa's FallbackClassifier names a rejected request this way; Rasa clients branch on it.
RASA_FALLBACK = "nlu_fallback"


def _valid_text(text: str) -> str:
    """Blank text is refused while validating the body, so it gets a 422 like every other field."""
    try:
        return check_text(text)
    except InputError as exc:
        raise PydanticCustomError("blank_text", str(exc)) from None


def _valid_timezone(zone: str) -> str:
    try:
        reference(0, zone)
    except InputError as exc:
        raise PydanticCustomError("timezone", "{message}", {"message": str(exc)}) from None
    return zone


def _valid_reference_time(moment: str) -> str:
    try:
        reference(moment, "UTC")
    except InputError as exc:
        raise PydanticCustomError("reference_time", "{message}", {"message": str(exc)}) from None
    return moment


ReferenceTime = Annotated[
    str | None,
    Field(
        max_length=64,
        description="Resolve relative times ('tomorrow at 8') from this instant, ISO-8601 "
        "(2026-11-28T12:00:00+01:00; without an offset it is read in `timezone`). Default: now.",
    ),
    AfterValidator(lambda v: v if v is None else _valid_reference_time(v)),
]
Timezone = Annotated[
    str | None,
    Field(
        max_length=64,
        description="IANA time zone the resolved times are given in (Europe/Zurich). Default: "
        "the server's (voicenlu serve --timezone).",
    ),
    AfterValidator(lambda v: v if v is None else _valid_timezone(v)),
]


def request_models(max_chars: int, max_batch: int, max_batch_chars: int):
    """Request bodies whose limits come from the app's settings, so /openapi.json states them."""

    def bounded_cost(texts: list[str]) -> list[str]:
        total = sum(len(t) for t in texts)
        if total > max_batch_chars:
            raise PydanticCustomError(
                "batch_too_long",
                "the texts have {total} characters together, more than this server's limit of "
                "{limit} for one batch: send them in smaller batches",
                {"total": total, "limit": max_batch_chars},
            )
        return texts

    strict = ConfigDict(extra="forbid", strict=True)
    Text = Annotated[
        str,
        Field(min_length=1, max_length=max_chars, description="The request, as typed or heard."),
        AfterValidator(_valid_text),
    ]
    Threshold = Field(
        None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Reject as out of scope below this in-scope score, 0 to 1 (default: the "
        "bundle's threshold, which lets 99% of its dev requests through).",
    )

    class ParseRequest(BaseModel):
        model_config = strict
        text: Text
        threshold: float | None = Threshold
        reference_time: ReferenceTime = None
        timezone: Timezone = None

    class BatchRequest(BaseModel):
        model_config = strict
        texts: Annotated[
            list[Text],
            Field(
                min_length=1,
                max_length=max_batch,
                description=f"At most {max_batch_chars} characters in all.",
            ),
            AfterValidator(bounded_cost),
        ]
        threshold: float | None = Threshold
        reference_time: ReferenceTime = None
        timezone: Timezone = None

    class RasaParseRequest(BaseModel):
        """Rasa's /model/parse body: ``message_id`` is accepted and ignored."""

        model_config = strict
        text: Text
        message_id: str | None = None
        reference_time: ReferenceTime = None
        timezone: Timezone = None

    return ParseRequest, BatchRequest, RasaParseRequest


class Intent(BaseModel):
    name: str | None
    confidence: float


class RankedIntent(BaseModel):
    name: str
    confidence: float


class Slot(BaseModel):
    slot: str
    value: str
    start: int
    end: int
    confidence: float
    resolved: dict[str, Any] | None = Field(
        description="What the value means: a time, number, duration... (`kind` says which) or "
        "a custom entity's canonical value; null when the slot has no type or nothing resolves."
    )


TRUNCATED = Field(
    False,
    description="Present, and true, only when the text was longer than the model reads: "
    "the model saw its beginning (the bundle's max_length sub-tokens) and no slot lies after.",
)


class Request(BaseModel):
    """One of several requests in a text: slot offsets index the whole text."""

    text: str = Field(description="This request's part of the text (without the connector).")
    start: int = Field(description="Where the part starts in the whole text.")
    end: int
    intent: Intent
    in_scope: bool
    intent_ranking: list[RankedIntent]
    slots: list[Slot]
    truncated: bool = TRUNCATED


class ParseResult(BaseModel):
    text: str
    intent: Intent
    in_scope: bool
    in_scope_score: float = Field(
        description="0 to 1, higher for requests more like those the model was trained on; "
        "in_scope is whether it reaches the threshold (the bundle's, or the request's)."
    )
    intent_ranking: list[RankedIntent]
    slots: list[Slot]
    truncated: bool = TRUNCATED
    requests: list[Request] | None = Field(
        None,
        description="Present only when the text holds several requests ('turn off the lights "
        "and close the blinds'): one result per request, in order; the fields above are the "
        "first request's.",
    )


class Timing(BaseModel):
    audio_ms: float = Field(description="length of the recording")
    recognise_ms: float = Field(description="time the recogniser took")
    understand_ms: float = Field(description="time the NLU model took on the transcript")


class AudioParseResult(ParseResult):
    transcript: str = Field(
        description="what the recogniser wrote; ``text`` is it as the model read it "
        "(lower-cased, words snapped to the assistant's vocabulary)"
    )
    timing: Timing


class RasaEntity(BaseModel):
    entity: str
    value: Any = Field(
        description="As Rasa's Duckling extractor and synonym mapper give it: an ISO-8601 time, "
        "{from, to} for an interval, a number, a canonical value; the text when unresolved."
    )
    text: str = Field(description="The slot's text, as spoken.")
    start: int
    end: int
    confidence_entity: float
    extractor: str
    additional_info: dict[str, Any] | None = Field(
        None, description="The slot's `resolved` value in full (null when unresolved)."
    )


class RasaParseResult(BaseModel):
    text: str
    intent: RankedIntent
    entities: list[RasaEntity]
    intent_ranking: list[RankedIntent]


def rasa_value(slot: dict) -> object:
    """A slot's entity value the way Rasa fills it: Duckling's value (``{"from", "to"}`` for an
    interval, an open end null), a synonym's canonical value, else the text."""
    resolved = slot["resolved"]
    if resolved is None:
        return slot["value"]
    if resolved.get("type") == "interval":
        return {end: (resolved[end] or {}).get("value") for end in ("to", "from")}
    return resolved["value"]


def to_rasa(result: dict, threshold: float) -> dict:
    """A parse result in Rasa's /model/parse shape.

    A rejected request becomes Rasa's ``nlu_fallback`` intent with the threshold as its
    confidence, put first in the ranking, as Rasa's FallbackClassifier does.
    """
    ranking = result["intent_ranking"]
    if result["in_scope"]:
        intent = ranking[0]
    else:
        intent = {"name": RASA_FALLBACK, "confidence": round(threshold, 4)}
        ranking = [intent, *ranking]
    entities = [
        {
            "entity": s["slot"],
            "value": rasa_value(s),
            "text": s["value"],
            "start": s["start"],
            "end": s["end"],
            "confidence_entity": s["confidence"],
            "extractor": "voicenlu",
            "additional_info": s["resolved"],
        }
        for s in result["slots"]
    ]
    return {
        "text": result["text"],
        "intent": intent,
        "entities": entities,
        "intent_ranking": ranking,
    }

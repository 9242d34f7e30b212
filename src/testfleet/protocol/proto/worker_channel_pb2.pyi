from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    CODEC_JSON: _ClassVar[Codec]
    CODEC_MSGPACK: _ClassVar[Codec]
    CODEC_PROTOBUF: _ClassVar[Codec]

class LogStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_STREAM_UNSPECIFIED: _ClassVar[LogStream]
    LOG_STREAM_STDOUT: _ClassVar[LogStream]
    LOG_STREAM_STDERR: _ClassVar[LogStream]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_MALFORMED_FRAME: _ClassVar[ErrorCode]
    ERROR_CODE_UNKNOWN_MESSAGE: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_MESSAGE: _ClassVar[ErrorCode]
    ERROR_CODE_UNSUPPORTED_VERSION: _ClassVar[ErrorCode]
    ERROR_CODE_WORKER_ID_IN_USE: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_REGISTERED: _ClassVar[ErrorCode]
    ERROR_CODE_FRAME_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_UNAUTHORIZED: _ClassVar[ErrorCode]
    ERROR_CODE_TOO_MANY_FRAMES: _ClassVar[ErrorCode]
    ERROR_CODE_TOO_MANY_WORKERS: _ClassVar[ErrorCode]
CODEC_UNSPECIFIED: Codec
CODEC_JSON: Codec
CODEC_MSGPACK: Codec
CODEC_PROTOBUF: Codec
LOG_STREAM_UNSPECIFIED: LogStream
LOG_STREAM_STDOUT: LogStream
LOG_STREAM_STDERR: LogStream
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_MALFORMED_FRAME: ErrorCode
ERROR_CODE_UNKNOWN_MESSAGE: ErrorCode
ERROR_CODE_INVALID_MESSAGE: ErrorCode
ERROR_CODE_UNSUPPORTED_VERSION: ErrorCode
ERROR_CODE_WORKER_ID_IN_USE: ErrorCode
ERROR_CODE_NOT_REGISTERED: ErrorCode
ERROR_CODE_FRAME_TOO_LARGE: ErrorCode
ERROR_CODE_UNAUTHORIZED: ErrorCode
ERROR_CODE_TOO_MANY_FRAMES: ErrorCode
ERROR_CODE_TOO_MANY_WORKERS: ErrorCode

class JsonDocument(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "worker_id", "session_key", "capabilities", "slots", "running_attempts", "held_results", "codecs")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_KEY_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    HELD_RESULTS_FIELD_NUMBER: _ClassVar[int]
    CODECS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    worker_id: str
    session_key: str
    capabilities: JsonDocument
    slots: int
    running_attempts: _containers.RepeatedScalarFieldContainer[int]
    held_results: _containers.RepeatedScalarFieldContainer[int]
    codecs: _containers.RepeatedScalarFieldContainer[Codec]
    def __init__(self, protocol_version: _Optional[int] = ..., worker_id: _Optional[str] = ..., session_key: _Optional[str] = ..., capabilities: _Optional[_Union[JsonDocument, _Mapping]] = ..., slots: _Optional[int] = ..., running_attempts: _Optional[_Iterable[int]] = ..., held_results: _Optional[_Iterable[int]] = ..., codecs: _Optional[_Iterable[_Union[Codec, str]]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("protocol_version", "worker_id", "codec", "heartbeat_interval_seconds", "heartbeat_timeout_seconds", "keep_attempts", "cancel_attempts")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEEP_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    worker_id: str
    codec: Codec
    heartbeat_interval_seconds: float
    heartbeat_timeout_seconds: float
    keep_attempts: _containers.RepeatedScalarFieldContainer[int]
    cancel_attempts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, protocol_version: _Optional[int] = ..., worker_id: _Optional[str] = ..., codec: _Optional[_Union[Codec, str]] = ..., heartbeat_interval_seconds: _Optional[float] = ..., heartbeat_timeout_seconds: _Optional[float] = ..., keep_attempts: _Optional[_Iterable[int]] = ..., cancel_attempts: _Optional[_Iterable[int]] = ...) -> None: ...

class WorkerLoad(_message.Message):
    __slots__ = ("cpu_percent", "memory_percent", "load_average_1m", "running", "gpu_utilization_percent", "gpu_memory_percent")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVERAGE_1M_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    memory_percent: float
    load_average_1m: float
    running: int
    gpu_utilization_percent: float
    gpu_memory_percent: float
    def __init__(self, cpu_percent: _Optional[float] = ..., memory_percent: _Optional[float] = ..., load_average_1m: _Optional[float] = ..., running: _Optional[int] = ..., gpu_utilization_percent: _Optional[float] = ..., gpu_memory_percent: _Optional[float] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("load", "running_attempts")
    LOAD_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    load: WorkerLoad
    running_attempts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, load: _Optional[_Union[WorkerLoad, _Mapping]] = ..., running_attempts: _Optional[_Iterable[int]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("attempt_id", "attempt", "task", "completed_tests")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_TESTS_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    attempt: int
    task: JsonDocument
    completed_tests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, attempt_id: _Optional[int] = ..., attempt: _Optional[int] = ..., task: _Optional[_Union[JsonDocument, _Mapping]] = ..., completed_tests: _Optional[_Iterable[str]] = ...) -> None: ...

class Assign(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class Accept(_message.Message):
    __slots__ = ("attempt_ids",)
    ATTEMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    attempt_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, attempt_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Reject(_message.Message):
    __slots__ = ("attempt_id", "reason")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    reason: str
    def __init__(self, attempt_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("attempt_id", "stream", "data")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    stream: LogStream
    data: str
    def __init__(self, attempt_id: _Optional[int] = ..., stream: _Optional[_Union[LogStream, str]] = ..., data: _Optional[str] = ...) -> None: ...

class TestReports(_message.Message):
    __slots__ = ("attempt_id", "records")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    records: _containers.RepeatedCompositeFieldContainer[JsonDocument]
    def __init__(self, attempt_id: _Optional[int] = ..., records: _Optional[_Iterable[_Union[JsonDocument, _Mapping]]] = ...) -> None: ...

class AttemptResult(_message.Message):
    __slots__ = ("attempt_id", "started_at", "finished_at", "result")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    started_at: float
    finished_at: float
    result: JsonDocument
    def __init__(self, attempt_id: _Optional[int] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., result: _Optional[_Union[JsonDocument, _Mapping]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AttemptResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AttemptResult, _Mapping]]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("attempt_ids",)
    ATTEMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    attempt_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, attempt_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("attempt_ids", "reason")
    ATTEMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    attempt_ids: _containers.RepeatedScalarFieldContainer[int]
    reason: str
    def __init__(self, attempt_ids: _Optional[_Iterable[int]] = ..., reason: _Optional[str] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Bye(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("protocol_version", "hello", "welcome", "heartbeat", "assign", "accept", "reject", "log", "tests", "result", "ack", "cancel", "drain", "bye", "error")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    BYE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    hello: Hello
    welcome: Welcome
    heartbeat: Heartbeat
    assign: Assign
    accept: Accept
    reject: Reject
    log: LogChunk
    tests: TestReports
    result: Result
    ack: Ack
    cancel: Cancel
    drain: Drain
    bye: Bye
    error: Error
    def __init__(self, protocol_version: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., assign: _Optional[_Union[Assign, _Mapping]] = ..., accept: _Optional[_Union[Accept, _Mapping]] = ..., reject: _Optional[_Union[Reject, _Mapping]] = ..., log: _Optional[_Union[LogChunk, _Mapping]] = ..., tests: _Optional[_Union[TestReports, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., bye: _Optional[_Union[Bye, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("json", "msgpack", "protobuf")
    JSON_FIELD_NUMBER: _ClassVar[int]
    MSGPACK_FIELD_NUMBER: _ClassVar[int]
    PROTOBUF_FIELD_NUMBER: _ClassVar[int]
    json: str
    msgpack: bytes
    protobuf: Envelope
    def __init__(self, json: _Optional[str] = ..., msgpack: _Optional[bytes] = ..., protobuf: _Optional[_Union[Envelope, _Mapping]] = ...) -> None: ...

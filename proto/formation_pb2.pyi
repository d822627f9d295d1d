from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_STATE_UNSPECIFIED: _ClassVar[InstanceState]
    INSTANCE_PENDING: _ClassVar[InstanceState]
    INSTANCE_STARTING: _ClassVar[InstanceState]
    INSTANCE_RUNNING: _ClassVar[InstanceState]
    INSTANCE_UNHEALTHY: _ClassVar[InstanceState]
    INSTANCE_CRASHED: _ClassVar[InstanceState]
    INSTANCE_STOPPING: _ClassVar[InstanceState]
    INSTANCE_STOPPED: _ClassVar[InstanceState]
    INSTANCE_LOST: _ClassVar[InstanceState]
    INSTANCE_SUCCEEDED: _ClassVar[InstanceState]
    INSTANCE_FAILED: _ClassVar[InstanceState]

class AgentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATE_UNSPECIFIED: _ClassVar[AgentState]
    AGENT_READY: _ClassVar[AgentState]
    AGENT_DRAINING: _ClassVar[AgentState]
    AGENT_DRAINED: _ClassVar[AgentState]
    AGENT_DOWN: _ClassVar[AgentState]
INSTANCE_STATE_UNSPECIFIED: InstanceState
INSTANCE_PENDING: InstanceState
INSTANCE_STARTING: InstanceState
INSTANCE_RUNNING: InstanceState
INSTANCE_UNHEALTHY: InstanceState
INSTANCE_CRASHED: InstanceState
INSTANCE_STOPPING: InstanceState
INSTANCE_STOPPED: InstanceState
INSTANCE_LOST: InstanceState
INSTANCE_SUCCEEDED: InstanceState
INSTANCE_FAILED: InstanceState
AGENT_STATE_UNSPECIFIED: AgentState
AGENT_READY: AgentState
AGENT_DRAINING: AgentState
AGENT_DRAINED: AgentState
AGENT_DOWN: AgentState

class HealthCheck(_message.Message):
    __slots__ = ("type", "path", "command", "interval", "timeout", "grace", "failures")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    GRACE_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    type: str
    path: str
    command: str
    interval: float
    timeout: float
    grace: float
    failures: int
    def __init__(self, type: _Optional[str] = ..., path: _Optional[str] = ..., command: _Optional[str] = ..., interval: _Optional[float] = ..., timeout: _Optional[float] = ..., grace: _Optional[float] = ..., failures: _Optional[int] = ...) -> None: ...

class DeploySettings(_message.Message):
    __slots__ = ("max_surge_count", "max_surge_percent", "max_unavailable_count", "max_unavailable_percent", "min_healthy_time", "healthy_deadline", "auto_revert")
    MAX_SURGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_SURGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MAX_UNAVAILABLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_UNAVAILABLE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MIN_HEALTHY_TIME_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    AUTO_REVERT_FIELD_NUMBER: _ClassVar[int]
    max_surge_count: int
    max_surge_percent: str
    max_unavailable_count: int
    max_unavailable_percent: str
    min_healthy_time: float
    healthy_deadline: float
    auto_revert: bool
    def __init__(self, max_surge_count: _Optional[int] = ..., max_surge_percent: _Optional[str] = ..., max_unavailable_count: _Optional[int] = ..., max_unavailable_percent: _Optional[str] = ..., min_healthy_time: _Optional[float] = ..., healthy_deadline: _Optional[float] = ..., auto_revert: _Optional[bool] = ...) -> None: ...

class ProcessType(_message.Message):
    __slots__ = ("name", "command", "stop_timeout", "at_most_once", "health", "deploy", "deregister_timeout")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    STOP_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    AT_MOST_ONCE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_FIELD_NUMBER: _ClassVar[int]
    DEREGISTER_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    command: str
    stop_timeout: float
    at_most_once: bool
    health: HealthCheck
    deploy: DeploySettings
    deregister_timeout: float
    def __init__(self, name: _Optional[str] = ..., command: _Optional[str] = ..., stop_timeout: _Optional[float] = ..., at_most_once: _Optional[bool] = ..., health: _Optional[_Union[HealthCheck, _Mapping]] = ..., deploy: _Optional[_Union[DeploySettings, _Mapping]] = ..., deregister_timeout: _Optional[float] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("app", "types", "env", "author", "release_command", "release_timeout")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APP_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    RELEASE_COMMAND_FIELD_NUMBER: _ClassVar[int]
    RELEASE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    app: str
    types: _containers.RepeatedCompositeFieldContainer[ProcessType]
    env: _containers.ScalarMap[str, str]
    author: str
    release_command: str
    release_timeout: float
    def __init__(self, app: _Optional[str] = ..., types: _Optional[_Iterable[_Union[ProcessType, _Mapping]]] = ..., env: _Optional[_Mapping[str, str]] = ..., author: _Optional[str] = ..., release_command: _Optional[str] = ..., release_timeout: _Optional[float] = ...) -> None: ...

class DeployReply(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class ScaleRequest(_message.Message):
    __slots__ = ("app", "counts", "author", "undo")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    APP_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    UNDO_FIELD_NUMBER: _ClassVar[int]
    app: str
    counts: _containers.ScalarMap[str, int]
    author: str
    undo: bool
    def __init__(self, app: _Optional[str] = ..., counts: _Optional[_Mapping[str, int]] = ..., author: _Optional[str] = ..., undo: _Optional[bool] = ...) -> None: ...

class ScaleReply(_message.Message):
    __slots__ = ("counts",)
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.ScalarMap[str, int]
    def __init__(self, counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetFormationRequest(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: str
    def __init__(self, app: _Optional[str] = ...) -> None: ...

class TypeCount(_message.Message):
    __slots__ = ("type", "desired", "running", "crash_looping")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    CRASH_LOOPING_FIELD_NUMBER: _ClassVar[int]
    type: str
    desired: int
    running: int
    crash_looping: bool
    def __init__(self, type: _Optional[str] = ..., desired: _Optional[int] = ..., running: _Optional[int] = ..., crash_looping: _Optional[bool] = ...) -> None: ...

class FormationReply(_message.Message):
    __slots__ = ("types", "release")
    TYPES_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedCompositeFieldContainer[TypeCount]
    release: int
    def __init__(self, types: _Optional[_Iterable[_Union[TypeCount, _Mapping]]] = ..., release: _Optional[int] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("app", "type", "state", "page_size", "page_token")
    APP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    app: str
    type: str
    state: InstanceState
    page_size: int
    page_token: str
    def __init__(self, app: _Optional[str] = ..., type: _Optional[str] = ..., state: _Optional[_Union[InstanceState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("id", "app", "type", "agent", "pid", "port", "restarts", "release", "reason", "state")
    ID_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    app: str
    type: str
    agent: str
    pid: int
    port: int
    restarts: int
    release: int
    reason: str
    state: InstanceState
    def __init__(self, id: _Optional[str] = ..., app: _Optional[str] = ..., type: _Optional[str] = ..., agent: _Optional[str] = ..., pid: _Optional[int] = ..., port: _Optional[int] = ..., restarts: _Optional[int] = ..., release: _Optional[int] = ..., reason: _Optional[str] = ..., state: _Optional[_Union[InstanceState, str]] = ...) -> None: ...

class ListInstancesReply(_message.Message):
    __slots__ = ("instances", "next_page_token")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    next_page_token: str
    def __init__(self, instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListSchedulersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SchedulerInfo(_message.Message):
    __slots__ = ("name", "address", "leader", "since", "healthy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    leader: bool
    since: float
    healthy: bool
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., leader: _Optional[bool] = ..., since: _Optional[float] = ..., healthy: _Optional[bool] = ...) -> None: ...

class ListSchedulersReply(_message.Message):
    __slots__ = ("schedulers",)
    SCHEDULERS_FIELD_NUMBER: _ClassVar[int]
    schedulers: _containers.RepeatedCompositeFieldContainer[SchedulerInfo]
    def __init__(self, schedulers: _Optional[_Iterable[_Union[SchedulerInfo, _Mapping]]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Agent(_message.Message):
    __slots__ = ("name", "address", "capacity", "instances", "last_seen", "connected", "metrics_address", "state", "isolation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    capacity: int
    instances: int
    last_seen: float
    connected: bool
    metrics_address: str
    state: AgentState
    isolation: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., capacity: _Optional[int] = ..., instances: _Optional[int] = ..., last_seen: _Optional[float] = ..., connected: _Optional[bool] = ..., metrics_address: _Optional[str] = ..., state: _Optional[_Union[AgentState, str]] = ..., isolation: _Optional[str] = ...) -> None: ...

class ListAgentsReply(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[Agent]
    def __init__(self, agents: _Optional[_Iterable[_Union[Agent, _Mapping]]] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("agent", "undo")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    UNDO_FIELD_NUMBER: _ClassVar[int]
    agent: str
    undo: bool
    def __init__(self, agent: _Optional[str] = ..., undo: _Optional[bool] = ...) -> None: ...

class DrainReply(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: Agent
    def __init__(self, agent: _Optional[_Union[Agent, _Mapping]] = ...) -> None: ...

class ListReleasesRequest(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: str
    def __init__(self, app: _Optional[str] = ...) -> None: ...

class ReleaseInfo(_message.Message):
    __slots__ = ("version", "created", "author", "description", "status", "reason", "crash_looping")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CRASH_LOOPING_FIELD_NUMBER: _ClassVar[int]
    version: int
    created: float
    author: str
    description: str
    status: str
    reason: str
    crash_looping: bool
    def __init__(self, version: _Optional[int] = ..., created: _Optional[float] = ..., author: _Optional[str] = ..., description: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., crash_looping: _Optional[bool] = ...) -> None: ...

class ListReleasesReply(_message.Message):
    __slots__ = ("releases",)
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    releases: _containers.RepeatedCompositeFieldContainer[ReleaseInfo]
    def __init__(self, releases: _Optional[_Iterable[_Union[ReleaseInfo, _Mapping]]] = ...) -> None: ...

class ListScalesRequest(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: str
    def __init__(self, app: _Optional[str] = ...) -> None: ...

class ScaleChange(_message.Message):
    __slots__ = ("time", "author", "before", "after", "undo")
    class BeforeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class AfterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TIME_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    UNDO_FIELD_NUMBER: _ClassVar[int]
    time: float
    author: str
    before: _containers.ScalarMap[str, int]
    after: _containers.ScalarMap[str, int]
    undo: bool
    def __init__(self, time: _Optional[float] = ..., author: _Optional[str] = ..., before: _Optional[_Mapping[str, int]] = ..., after: _Optional[_Mapping[str, int]] = ..., undo: _Optional[bool] = ...) -> None: ...

class ListScalesReply(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ScaleChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[ScaleChange, _Mapping]]] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: str
    def __init__(self, app: _Optional[str] = ...) -> None: ...

class ConfigReply(_message.Message):
    __slots__ = ("config", "release")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    config: _containers.ScalarMap[str, str]
    release: int
    def __init__(self, config: _Optional[_Mapping[str, str]] = ..., release: _Optional[int] = ...) -> None: ...

class SetConfigRequest(_message.Message):
    __slots__ = ("app", "set", "unset", "author")
    class SetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APP_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    UNSET_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    app: str
    set: _containers.ScalarMap[str, str]
    unset: _containers.RepeatedScalarFieldContainer[str]
    author: str
    def __init__(self, app: _Optional[str] = ..., set: _Optional[_Mapping[str, str]] = ..., unset: _Optional[_Iterable[str]] = ..., author: _Optional[str] = ...) -> None: ...

class SetConfigReply(_message.Message):
    __slots__ = ("version", "changed")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    version: int
    changed: bool
    def __init__(self, version: _Optional[int] = ..., changed: _Optional[bool] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("app", "version", "author", "run_release")
    APP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    RUN_RELEASE_FIELD_NUMBER: _ClassVar[int]
    app: str
    version: int
    author: str
    run_release: bool
    def __init__(self, app: _Optional[str] = ..., version: _Optional[int] = ..., author: _Optional[str] = ..., run_release: _Optional[bool] = ...) -> None: ...

class RollbackReply(_message.Message):
    __slots__ = ("version", "to")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    version: int
    to: int
    def __init__(self, version: _Optional[int] = ..., to: _Optional[int] = ...) -> None: ...

class RestartRequest(_message.Message):
    __slots__ = ("app", "targets", "author")
    APP_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    app: str
    targets: _containers.RepeatedScalarFieldContainer[str]
    author: str
    def __init__(self, app: _Optional[str] = ..., targets: _Optional[_Iterable[str]] = ..., author: _Optional[str] = ...) -> None: ...

class RestartReply(_message.Message):
    __slots__ = ("types", "instances", "release")
    TYPES_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedScalarFieldContainer[str]
    instances: _containers.RepeatedScalarFieldContainer[str]
    release: int
    def __init__(self, types: _Optional[_Iterable[str]] = ..., instances: _Optional[_Iterable[str]] = ..., release: _Optional[int] = ...) -> None: ...

class RemoveAgentRequest(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    def __init__(self, agent: _Optional[str] = ...) -> None: ...

class RemoveAgentReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("app", "selector", "tail", "follow")
    APP_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    app: str
    selector: str
    tail: int
    follow: bool
    def __init__(self, app: _Optional[str] = ..., selector: _Optional[str] = ..., tail: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("time", "app", "instance", "text", "agent", "missed")
    TIME_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    time: float
    app: str
    instance: str
    text: str
    agent: str
    missed: int
    def __init__(self, time: _Optional[float] = ..., app: _Optional[str] = ..., instance: _Optional[str] = ..., text: _Optional[str] = ..., agent: _Optional[str] = ..., missed: _Optional[int] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("app", "tail", "follow")
    APP_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    app: str
    tail: int
    follow: bool
    def __init__(self, app: _Optional[str] = ..., tail: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class EventInfo(_message.Message):
    __slots__ = ("time", "kind", "text", "author", "missed")
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    time: float
    kind: str
    text: str
    author: str
    missed: int
    def __init__(self, time: _Optional[float] = ..., kind: _Optional[str] = ..., text: _Optional[str] = ..., author: _Optional[str] = ..., missed: _Optional[int] = ...) -> None: ...

class EndpointsWatch(_message.Message):
    __slots__ = ("app", "type", "name", "acknowledges")
    APP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGES_FIELD_NUMBER: _ClassVar[int]
    app: str
    type: str
    name: str
    acknowledges: bool
    def __init__(self, app: _Optional[str] = ..., type: _Optional[str] = ..., name: _Optional[str] = ..., acknowledges: _Optional[bool] = ...) -> None: ...

class EndpointsAck(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class EndpointsRequest(_message.Message):
    __slots__ = ("watch", "ack")
    WATCH_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    watch: EndpointsWatch
    ack: EndpointsAck
    def __init__(self, watch: _Optional[_Union[EndpointsWatch, _Mapping]] = ..., ack: _Optional[_Union[EndpointsAck, _Mapping]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("app", "type", "instance", "agent", "host", "port", "release", "generation")
    APP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    app: str
    type: str
    instance: str
    agent: str
    host: str
    port: int
    release: int
    generation: int
    def __init__(self, app: _Optional[str] = ..., type: _Optional[str] = ..., instance: _Optional[str] = ..., agent: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., release: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class EndpointSet(_message.Message):
    __slots__ = ("version", "endpoints")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, version: _Optional[int] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class InstanceStatus(_message.Message):
    __slots__ = ("app", "id", "release", "pid", "port", "restarts", "reason", "state", "generation")
    APP_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    app: str
    id: str
    release: int
    pid: int
    port: int
    restarts: int
    reason: str
    state: InstanceState
    generation: int
    def __init__(self, app: _Optional[str] = ..., id: _Optional[str] = ..., release: _Optional[int] = ..., pid: _Optional[int] = ..., port: _Optional[int] = ..., restarts: _Optional[int] = ..., reason: _Optional[str] = ..., state: _Optional[_Union[InstanceState, str]] = ..., generation: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("name", "address", "capacity", "instances", "metrics_address", "api_address", "isolation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    API_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    capacity: int
    instances: _containers.RepeatedCompositeFieldContainer[InstanceStatus]
    metrics_address: str
    api_address: str
    isolation: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., capacity: _Optional[int] = ..., instances: _Optional[_Iterable[_Union[InstanceStatus, _Mapping]]] = ..., metrics_address: _Optional[str] = ..., api_address: _Optional[str] = ..., isolation: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[InstanceStatus]
    def __init__(self, items: _Optional[_Iterable[_Union[InstanceStatus, _Mapping]]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "statuses")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    statuses: StatusBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., statuses: _Optional[_Union[StatusBatch, _Mapping]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("app", "id", "type", "release", "command", "env", "stop_timeout", "at_most_once", "health", "oneshot", "timeout", "generation")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APP_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    STOP_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    AT_MOST_ONCE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    ONESHOT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    app: str
    id: str
    type: str
    release: int
    command: str
    env: _containers.ScalarMap[str, str]
    stop_timeout: float
    at_most_once: bool
    health: HealthCheck
    oneshot: bool
    timeout: float
    generation: int
    def __init__(self, app: _Optional[str] = ..., id: _Optional[str] = ..., type: _Optional[str] = ..., release: _Optional[int] = ..., command: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., stop_timeout: _Optional[float] = ..., at_most_once: _Optional[bool] = ..., health: _Optional[_Union[HealthCheck, _Mapping]] = ..., oneshot: _Optional[bool] = ..., timeout: _Optional[float] = ..., generation: _Optional[int] = ...) -> None: ...

class ReleaseEnv(_message.Message):
    __slots__ = ("app", "release", "env")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APP_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    app: str
    release: int
    env: _containers.ScalarMap[str, str]
    def __init__(self, app: _Optional[str] = ..., release: _Optional[int] = ..., env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Assignments(_message.Message):
    __slots__ = ("items", "envs", "fence_after", "agent_ttl", "epoch")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ENVS_FIELD_NUMBER: _ClassVar[int]
    FENCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    AGENT_TTL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Assignment]
    envs: _containers.RepeatedCompositeFieldContainer[ReleaseEnv]
    fence_after: float
    agent_ttl: float
    epoch: int
    def __init__(self, items: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., envs: _Optional[_Iterable[_Union[ReleaseEnv, _Mapping]]] = ..., fence_after: _Optional[float] = ..., agent_ttl: _Optional[float] = ..., epoch: _Optional[int] = ...) -> None: ...

class SchedulerMessage(_message.Message):
    __slots__ = ("assignments", "ack")
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    assignments: Assignments
    ack: Heartbeat
    def __init__(self, assignments: _Optional[_Union[Assignments, _Mapping]] = ..., ack: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

"""The system of record: SQLAlchemy Core tables, identical on SQLite and PostgreSQL.

Times are integer milliseconds since the epoch (UTC): the same on both databases, cheap to
index and to compare, and exactly what the snippet sends. ``events`` is the large table:
its primary key starts with the visitor and the time, so per-visitor and per-session scans
are one index range, and it carries ``ts`` in every unique key so PostgreSQL can
range-partition it by time. Exactly-once is ``event_ids``' key, which does not contain the
time (a resend may carry another one).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

customers = Table(
    "customers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("traits", JSON, nullable=False, default=dict),
    # Set when an admin merge folded this customer into another; kept so a split can undo it.
    Column("merged_into", String(32), nullable=True),
)

customer_identifiers = Table(
    "customer_identifiers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", String(32), ForeignKey("customers.id"), nullable=False),
    Column("site_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # email | phone | customer_id
    Column("value", String(254), nullable=False),  # normalised
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("site_id", "kind", "value"),
    Index(None, "customer_id"),
)

visitors = Table(
    "visitors",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("customer_id", String(32), nullable=True),
    Column("first_seen_at", BigInteger, nullable=False),
    # Start of the latest visit (updated once per visit, not per event: the hot path).
    Column("last_visit_at", BigInteger, nullable=False),
    Column("session_count", Integer, nullable=False, default=0),
    # Bumped by every batch's transaction, only from the version the batch's live state was
    # read at: a second writer for the visitor is refused at commit (store/writer.py).
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    Index(None, "customer_id"),
    Index(None, "last_visit_at"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("visitor_id", String(64), nullable=False),
    Column("customer_id", String(32), nullable=True),
    Column("number", Integer, nullable=False),  # visit number of this visitor, from 1
    Column("started_at", BigInteger, nullable=False),
    Column("last_event_at", BigInteger, nullable=False),
    Column("event_count", Integer, nullable=False),
    Column("page_count", Integer, nullable=False),
    Column("landing_url", Text, nullable=True),
    Column("referrer", Text, nullable=True),
    Column("referrer_domain", String(255), nullable=True),
    Column("utm_source", String(255), nullable=True),
    Column("utm_medium", String(255), nullable=True),
    Column("utm_campaign", String(255), nullable=True),
    Column("utm_term", String(255), nullable=True),
    Column("utm_content", String(255), nullable=True),
    Column("device_type", String(16), nullable=True),
    Column("browser", String(64), nullable=True),
    Column("os", String(64), nullable=True),
    Column("country", String(2), nullable=True),
    Column("region", String(64), nullable=True),
    Column("city", String(128), nullable=True),
    Column("locale", String(35), nullable=True),
    Column("timezone", String(64), nullable=True),
    Index(None, "visitor_id", "started_at"),
    Index(None, "customer_id", "started_at"),
    Index(None, "started_at"),
)

events = Table(
    "events",
    metadata,
    Column("visitor_id", String(64), primary_key=True),
    Column("ts", BigInteger, primary_key=True),  # server-clock ms
    Column("event_id", String(64), primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("session_id", String(40), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    # Position within its batch: orders events that share a millisecond.
    Column("seq", Integer, nullable=False, default=0),
    Column("type", String(16), nullable=False),
    Column("url", Text, nullable=True),
    Column("name", String(512), nullable=True),
    Column("query", String(512), nullable=True),
    Column("title", String(512), nullable=True),
    Column("referrer", Text, nullable=True),
    Column("data", Text, nullable=True),  # JSON of attributes (and traits for identify)
    # No index on session_id: a session's events are one range of the primary key
    # (its visitor, between its start and last event). Each index on this table costs
    # about a quarter of the insert rate.
    Index(None, "ts"),
)

# The database's exactly-once guard: one row per stored event, keyed by what identifies the
# event to its client (site, visitor, the client's event id) and not by the server-corrected
# time, which a resend with another ``sentAt`` changes. Written in the events' transaction
# with ON CONFLICT DO NOTHING; ``events`` itself stays keyed by time, so it can still be
# partitioned by ``ts``. ``ts`` here is the stored event's, for retention (no index: a
# retention scan is rare; each index costs insert rate). SQLite: WITHOUT ROWID, one B-tree.
event_ids = Table(
    "event_ids",
    metadata,
    Column("site_id", String(64), primary_key=True),
    Column("visitor_id", String(64), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("ts", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

identity_log = Table(
    "identity_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("site_id", String(64), nullable=False),
    # link | new_customer | add_identifier | switch | conflict | refused | admin_merge | split
    Column("kind", String(24), nullable=False),
    Column("visitor_id", String(64), nullable=True),
    Column("customer_id", String(32), nullable=True),
    Column("other_customer_id", String(32), nullable=True),
    Column("detail", JSON, nullable=False, default=dict),
    Column("reverted_by", Integer, nullable=True),
    Index(None, "customer_id"),
    Index(None, "at"),
)

erasures = Table(
    "erasures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("site_id", String(64), nullable=False),
    Column("customer_id", String(32), nullable=False),
    Column("counts", JSON, nullable=False),
)

# Segment facts, append-only so that concurrent batches can write them in any order:
# entered / left for session-scope segments, assigned (with its expiry) for customer scope.
# Intervals and current assignments are folded from these rows when read.
segment_changes = Table(
    "segment_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("site_id", String(64), nullable=False),
    Column("segment", String(64), nullable=False),
    Column("change", String(8), nullable=False),  # entered | left | assigned
    Column("at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),  # assigned only
    Column("session_id", String(40), nullable=False),
    Column("visitor_id", String(64), nullable=False),
    Column("customer_id", String(32), nullable=True),
    Index(None, "session_id"),
    Index(None, "visitor_id", "at"),
    Index(None, "customer_id", "at"),
    Index(None, "at"),
)

# Outcomes achieved: at most one row per visit and outcome; for reports and training.
outcome_achievements = Table(
    "outcome_achievements",
    metadata,
    Column("session_id", String(40), primary_key=True),
    Column("outcome", String(64), primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("visitor_id", String(64), nullable=False),
    Column("customer_id", String(32), nullable=True),
    Column("achieved_at", BigInteger, nullable=False),
    Column("value", Float, nullable=True),
    Column("event_id", String(64), nullable=False),
    Index(None, "achieved_at"),
    Index(None, "customer_id"),
)

# Segments and outcomes created over the admin API (workspace files hold the others).
# A delete leaves the row with no body and a new version, so every process sees the change
# by polling max(version).
definitions = Table(
    "definitions",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("body", JSON, nullable=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "version"),
)

# Every state an action instance goes through (qualified, holdout, blocked with its reason,
# offered, accepted, rejected, timeout, ignored, started, engaged, abandoned, completed,
# errored), append-only: the engaged-vs-holdout uplift and the explanations read it.
action_events = Table(
    "action_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("site_id", String(64), nullable=False),
    Column("map", String(64), nullable=False),
    Column("instance_id", String(40), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(255), nullable=True),
    Column("at", BigInteger, nullable=False),
    Column("session_id", String(40), nullable=False),
    Column("visitor_id", String(64), nullable=False),
    Column("customer_id", String(32), nullable=True),
    Column("detail", Text, nullable=True),  # JSON: a form's field names, an error code
    Index(None, "instance_id"),
    Index(None, "map", "at"),
    Index(None, "session_id"),
)

# Webhook calls to make, written with the decision (an outbox): the worker sends them,
# retries with backoff, and leaves those that never succeed as dead letters.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),  # the action instance: one call per instance
    Column("site_id", String(64), nullable=False),
    Column("map", String(64), nullable=False),
    Column("session_id", String(40), nullable=False),
    Column("visitor_id", String(64), nullable=False),
    Column("method", String(8), nullable=False),
    Column("url", Text, nullable=False),
    Column("headers", Text, nullable=False),  # JSON, secrets still as ${secret:NAME}
    Column("body", Text, nullable=False),  # the rendered JSON body
    Column("timeout_ms", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("status", String(8), nullable=False),  # pending | sent | dead
    Column("next_at", BigInteger, nullable=False),
    Column("claimed_until", BigInteger, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("done_at", BigInteger, nullable=True),
    Index(None, "status", "next_at"),
)

# Agents present per chat queue, as pacing sees them until routing provides it (admin API).
queue_presence = Table(
    "queue_presence",
    metadata,
    Column("queue", String(64), primary_key=True),
    Column("agents_available", Integer, nullable=False),
    Column("busy_slots", Integer, nullable=False),
    Column("waiting", Integer, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Routing: agents' live state (their definitions are workspace documents), interactions
# with the decision that routed each (scores, propensity, why: unbiased offline evaluation
# needs them), and outcomes attributed to interactions from outside.
agent_state = Table(
    "agent_state",
    metadata,
    Column("agent_id", String(64), primary_key=True),
    Column("presence", String(12), nullable=False),  # available | busy | away | offline
    Column("idle_since", BigInteger, nullable=False),
    Column("last_assigned", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Every presence an agent was put in, and when: the history the occupancy report needs
# (``agent_state`` keeps only the present). Written with the change, so a presence never
# changes without its row.
agent_presence_log = Table(
    "agent_presence_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agent_id", String(64), nullable=False),
    Column("presence", String(12), nullable=False),
    Column("at", BigInteger, nullable=False),
    Index(None, "agent_id", "at"),
    Index(None, "at"),
)

interactions = Table(
    "interactions",
    metadata,
    Column("id", String(64), primary_key=True),  # the conversation id
    Column("queue", String(64), nullable=False),
    Column("medium", String(8), nullable=False),
    Column("language", String(8), nullable=True),
    Column("priority", Integer, nullable=False),
    Column("customer_id", String(128), nullable=True),
    Column("visitor_id", String(64), nullable=True),
    # JSON {name: number}: the customer and journey at arrival, as the KPI model sees them
    Column("features", Text, nullable=True),
    Column("status", String(10), nullable=False),  # waiting | assigned | ended | abandoned
    Column("arrived_at", BigInteger, nullable=False),
    Column("assigned_at", BigInteger, nullable=True),
    Column("agent_id", String(64), nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Column("wrap_up_code", String(64), nullable=True),
    Column("arm", String(12), nullable=True),  # predictive | standard | control
    Column("method", String(12), nullable=True),
    Column("propensity", Float, nullable=True),
    Column("scores", Text, nullable=True),  # JSON [[agent, score], ...]
    Column("why", String(500), nullable=True),
    Column("candidates", Text, nullable=True),  # JSON [agent, ...] eligible and free then
    Column("held_since", BigInteger, nullable=True),  # first passed over for a better agent
    Index(None, "status", "queue"),
    Index(None, "agent_id", "ended_at"),
    Index(None, "customer_id"),
    Index(None, "arrived_at"),
)

outcome_attributions = Table(
    "outcome_attributions",
    metadata,
    Column("id", String(128), primary_key=True),  # the record's id: a repeat is a duplicate
    Column("outcome_id", String(128), nullable=True),  # the KPI's generated outcome id
    Column("customer_id", String(128), nullable=True),
    Column("external_contact_id", String(128), nullable=True),
    Column("value", Float, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Index(None, "outcome_id"),
)

attribution_touchpoints = Table(
    "attribution_touchpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("attribution_id", String(128), nullable=False),
    Column("conversation_id", String(64), nullable=False),
    Column("agent_id", String(64), nullable=False),
    Column("medium", String(8), nullable=False),
    Column("value_share", Float, nullable=False),
    Column("at", BigInteger, nullable=False),
    Index(None, "conversation_id"),
    Index(None, "attribution_id"),
)

# A web chat: its state machine is core.conversations'. The id is the routed interaction's.
conversations = Table(
    "conversations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("visitor_id", String(64), nullable=False),
    Column("customer_id", String(32), nullable=True),
    Column("state", String(10), nullable=False),
    Column("queue", String(64), nullable=True),
    Column("agent_id", String(64), nullable=True),
    Column("language", String(8), nullable=True),
    Column("offer", String(64), nullable=True),  # the action-map instance that offered it
    Column("registration", Text, nullable=True),  # JSON: the form the visitor filled in
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("next_seq", Integer, nullable=False),
    Column("visitor_seen_at", BigInteger, nullable=False),  # heartbeat: gone after a grace
    Column("visitor_read_seq", Integer, nullable=False),
    Column("agent_read_seq", Integer, nullable=False),
    Column("ended_at", BigInteger, nullable=True),
    Column("wrap_up_code", String(64), nullable=True),
    Column("rating", Integer, nullable=True),
    Column("bot_flow", String(64), nullable=True),  # the flow answering first, if any
    Column("bot_state", Text, nullable=True),  # JSON: core.bot.BotState between turns
    Column("intent", String(64), nullable=True),  # what the bot understood, for the agent
    Column("notes", Text, nullable=True),  # the agent's wrap-up notes
    Index(None, "state", "visitor_seen_at"),
    Index(None, "visitor_id"),
    Index(None, "customer_id"),
    Index(None, "agent_id", "state"),
)

# Its messages, in the order the server fixed (seq); a resend of a client id is the same row.
conversation_messages = Table(
    "conversation_messages",
    metadata,
    Column("conversation_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("sender", String(8), nullable=False),  # visitor | agent | bot | system
    Column("author", String(64), nullable=True),  # the agent's id or the bot flow's name
    Column("text", Text, nullable=False),
    Column("payload", Text, nullable=True),  # JSON: a bot's buttons and links
    Column("at", BigInteger, nullable=False),
    UniqueConstraint("conversation_id", "client_id"),
)

# The people who sign in (agents, supervisors, admins); an agent user is a routing agent.
users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),  # stored lower-cased
    Column("name", String(128), nullable=False),
    Column("role", String(10), nullable=False),  # admin | supervisor | agent
    Column("agent_id", String(64), nullable=True, unique=True),
    Column("queues", Text, nullable=True),  # JSON list: the queues a supervisor watches
    Column("password_hash", String(255), nullable=False),  # argon2id
    Column("created_at", BigInteger, nullable=False),
    Column("disabled_at", BigInteger, nullable=True),
)

# A signed-in browser: the cookie holds the token, the row only its hash.
user_sessions = Table(
    "user_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(32), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index(None, "user_id"),
)

# Every change to the workspace made through the console or the admin API, append-only:
# who (a user, or the API key), when, what, and the document before and after (no body:
# it did not exist / was deleted). The console's audit page reads it newest first.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("actor_id", String(32), nullable=True),  # a user's id; none for the API key
    Column("actor_name", String(128), nullable=False),
    Column("action", String(10), nullable=False),  # create | update | delete | import
    Column("kind", String(16), nullable=False),
    Column("name", String(254), nullable=False),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
    Index(None, "kind", "name"),
)

# The reports' counts, pre-aggregated per site, UTC quarter hour (ms // 900 000), metric and
# up to three key values (store/rollups.py lists the metrics; docs/reports.md). A quarter's
# rows are replaced together, recounted from the raw tables, so there is no primary key:
# keys may be NULL (a visit without a referrer) and a recount never updates in place.
report_rollups = Table(
    "report_rollups",
    metadata,
    Column("site_id", String(64), nullable=False),
    Column("quarter", BigInteger, nullable=False),
    Column("metric", String(24), nullable=False),
    Column("k1", Text, nullable=True),
    Column("k2", String(255), nullable=True),
    Column("k3", String(255), nullable=True),
    Column("n", BigInteger, nullable=False),
    Column("x", Float, nullable=True),  # a sum that is not a count (page views, value)
    Index(None, "metric", "quarter", "site_id"),
    Index(None, "site_id", "quarter"),
)

# The same counts per UTC day (ms // 86 400 000), summed from the quarter hours whenever
# those change: a long range reads its whole UTC days here and only its edges by quarter.
report_rollups_daily = Table(
    "report_rollups_daily",
    metadata,
    Column("site_id", String(64), nullable=False),
    Column("day", BigInteger, nullable=False),
    Column("metric", String(24), nullable=False),
    Column("k1", Text, nullable=True),
    Column("k2", String(255), nullable=True),
    Column("k3", String(255), nullable=True),
    Column("n", BigInteger, nullable=False),
    Column("x", Float, nullable=True),
    Index(None, "metric", "day", "site_id"),
    Index(None, "site_id", "day"),
)

# How far the rollups have read the raw tables: named watermarks (ms, or an id).
report_rollup_marks = Table(
    "report_rollup_marks",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# Admin API keys: the key is shown once at creation; the row keeps its sha256 only.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),  # the key's public prefix, opk_<id>_…
    Column("name", String(128), nullable=False),
    Column("scope", String(8), nullable=False),  # read | write | admin
    Column("key_hash", String(64), nullable=False),  # sha256 hex of the whole key
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

-- Leadership among replicas of one node sharing this database (#27). One row per lease: the
-- replica holding `relay` runs the node's singletons (relay senders, SLA tracker, alerts,
-- collectors, scheduled jobs). `epoch` grows with every change of holder, and each settlement
-- of a relay cursor checks it in its own transaction, so a former leader (paused past its
-- lease, cut off from the database) settles nothing once another has taken over. Times are the
-- database's clock, the one clock every replica shares.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

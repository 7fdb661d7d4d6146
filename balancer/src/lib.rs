//! The sticky engine.io balancer (pingora). Not built yet; see the sticky-balancer issue.

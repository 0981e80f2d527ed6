"""The one decision path: rules and stream checks, model scores, then the site's policy."""

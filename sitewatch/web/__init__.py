"""The web child: status page, JSON API and badges (read-only; DESIGN.md section 11)."""

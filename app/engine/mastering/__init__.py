"""The offline mastering chain: plan, EQ, dynamics, imaging, true-peak limiting, loudness."""

"""The fault-test harness: H1 scripted upstream, H2 raw client, H4/H5 proxy subprocess, L1-L5 checks."""

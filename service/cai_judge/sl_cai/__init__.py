"""SL-CAI, the supervised phase of Constitutional AI: critique and revise responses
against the same constitutions the judge labels with (Bai et al. 2022, §3)."""

"""`lmtune ui`: a web app over a workspace folder to look at data, launch, watch and compare runs."""

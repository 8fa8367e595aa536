"""The web app's JSON API, one router per page: data, runs (new run, list, run, compare), searches, try."""

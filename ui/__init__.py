"""The web UI (Streamlit). It talks only to the search API (``IMAGESEARCH_API_URL``)."""

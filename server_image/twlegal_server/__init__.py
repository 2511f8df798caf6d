"""The twlegal server launcher: ServingLaunch args -> a checked revision -> vLLM's OpenAI server."""

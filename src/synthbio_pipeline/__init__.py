"""Synthesize Bio API client, streaming result parser and offline emulator."""

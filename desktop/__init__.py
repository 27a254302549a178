"""Lienzo's Qt face. Talks to core through the job API and the project facade only."""

"""What ``make example`` and the end-to-end tests run the shop with: an SMTP sink, a webhook
receiver, the API and worker processes on free ports, and a scripted scenario."""

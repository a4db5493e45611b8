"""Notification channels: SMS, WeCom / DingTalk robots, e-mail."""

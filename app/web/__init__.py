"""The holder page (/m/) and the institution scanner page (/scanner/)."""

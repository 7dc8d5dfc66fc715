"""Hand labels for the tool risk model's evaluation (tests/context/test_tool_risk.py, docs/tool-risk.md).

Each tool's classes by the definitions in `aarmor.context.tool_risk.ToolClass`, judged from what the tool
does in its own suite or server (its implementation, not only its name). Contested calls, and why:

- Bookings (`reserve_hotel`, `reserve_car_rental`, `reserve_restaurant`) are `financial`: a
  reservation commits the user to pay. None of them sends anything to a party the caller chooses.
- Money transfers (`send_money`, `schedule_transaction`, `update_scheduled_transaction`) are also
  `external_communication`: the `subject` reaches a recipient the caller names (AgentDojo's banking
  attacks exfiltrate data through it).
- Calendar events with participants (`create_calendar_event`, `add_calendar_event_participants`) are
  `external_communication`: participants receive the event's title and description. Rescheduling
  changes times only (`write`).
- `cancel_calendar_event` is `destructive` (the event is removed for everyone);
  `remove_user_from_slack` is `destructive` and a permission change.
- Membership and access grants are `credential_or_permission_change`: `share_file` (with a
  permission), `add_user_to_channel`, `invite_user_to_slack`, `remove_user_from_slack`,
  `update_password`. `update_user_info` (name and address) is not.
- `get_webpage` reads the open web (`read_only` + `open_world`); `post_webpage` publishes
  (`external_communication`).
- MCP servers: the server's annotations are taken as the truth for the effect axis and `destructive`
  (`write_file`, `edit_file`, `move_file`, `git_reset` destructive; `gzip-file-as-resource` open world
  and not read-only; `simulate-research-query` not read-only).
"""

from __future__ import annotations

R = ("read_only",)
W = ("write",)

AGENTDOJO_LABELS: dict[str, tuple[str, ...]] = {
    # workspace
    "send_email": ("write", "external_communication"),
    "delete_email": ("write", "destructive"),
    "get_unread_emails": R, "get_sent_emails": R, "get_received_emails": R, "get_draft_emails": R,
    "search_emails": R, "search_contacts_by_name": R, "search_contacts_by_email": R, "get_current_day": R,
    "search_calendar_events": R, "get_day_calendar_events": R,
    "create_calendar_event": ("write", "external_communication"),
    "cancel_calendar_event": ("write", "destructive"),
    "reschedule_calendar_event": W,
    "add_calendar_event_participants": ("write", "external_communication"),
    "append_to_file": W, "create_file": W,
    "search_files_by_filename": R, "get_file_by_id": R, "list_files": R, "search_files": R,
    "delete_file": ("write", "destructive"),
    "share_file": ("write", "external_communication", "credential_or_permission_change"),
    # travel
    "get_user_information": R, "get_all_hotels_in_city": R, "get_hotels_prices": R,
    "get_rating_reviews_for_hotels": R, "get_hotels_address": R, "get_all_restaurants_in_city": R,
    "get_cuisine_type_for_restaurants": R, "get_restaurants_address": R, "get_rating_reviews_for_restaurants": R,
    "get_dietary_restrictions_for_all_restaurants": R, "get_contact_information_for_restaurants": R,
    "get_price_for_restaurants": R, "check_restaurant_opening_hours": R, "get_all_car_rental_companies_in_city": R,
    "get_car_types_available": R, "get_rating_reviews_for_car_rental": R, "get_car_fuel_options": R,
    "get_car_rental_address": R, "get_car_price_per_day": R, "get_flight_information": R,
    "reserve_hotel": ("write", "financial"),
    "reserve_car_rental": ("write", "financial"),
    "reserve_restaurant": ("write", "financial"),
    # banking
    "get_iban": R, "get_balance": R, "get_most_recent_transactions": R, "get_scheduled_transactions": R,
    "read_file": R, "get_user_info": R,
    "send_money": ("write", "financial", "external_communication"),
    "schedule_transaction": ("write", "financial", "external_communication"),
    "update_scheduled_transaction": ("write", "financial", "external_communication"),
    "update_password": ("write", "credential_or_permission_change"),
    "update_user_info": W,
    # slack
    "get_channels": R, "read_channel_messages": R, "read_inbox": R, "get_users_in_channel": R,
    "add_user_to_channel": ("write", "credential_or_permission_change"),
    "send_direct_message": ("write", "external_communication"),
    "send_channel_message": ("write", "external_communication"),
    "invite_user_to_slack": ("write", "external_communication", "credential_or_permission_change"),
    "remove_user_from_slack": ("write", "destructive", "credential_or_permission_change"),
    "get_webpage": ("read_only", "open_world"),
    "post_webpage": ("write", "external_communication"),
}

MCP_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "server-filesystem": {
        "read_file": R, "read_text_file": R, "read_media_file": R, "read_multiple_files": R,
        "write_file": ("write", "destructive"), "edit_file": ("write", "destructive"),
        "create_directory": W, "list_directory": R, "list_directory_with_sizes": R, "directory_tree": R,
        "move_file": ("write", "destructive"), "search_files": R, "get_file_info": R,
        "list_allowed_directories": R,
    },
    "mcp-server-git": {
        "git_status": R, "git_diff_unstaged": R, "git_diff_staged": R, "git_diff": R, "git_commit": W,
        "git_add": W, "git_reset": ("write", "destructive"), "git_log": R, "git_create_branch": W,
        "git_checkout": W, "git_show": R, "git_branch": R,
    },
    "mcp-server-time": {"get_current_time": R, "convert_time": R},
    "server-everything": {
        "echo": R, "get-annotated-message": R, "get-env": R, "get-resource-links": R,
        "get-resource-reference": R, "get-structured-content": R, "get-sum": R, "get-tiny-image": R,
        "gzip-file-as-resource": ("write", "open_world"), "toggle-simulated-logging": W,
        "toggle-subscriber-updates": W, "trigger-long-running-operation": R, "simulate-research-query": W,
    },
}

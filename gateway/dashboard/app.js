// placeholder: the developer-settings page (issue 15)

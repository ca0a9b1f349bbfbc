# The kernel's Python first, also in login shells (ttyd's bash -l; /etc/profile resets PATH).
case ":$PATH:" in *:/opt/python/bin:*) ;; *) PATH=/opt/python/bin:$PATH; export PATH ;; esac

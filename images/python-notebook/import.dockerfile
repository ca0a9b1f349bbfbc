ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV LANG=C.UTF-8
ENV PYTHONUNBUFFERED=1
ENV SHELL=/bin/bash
WORKDIR /home/work
CMD ["/opt/python/bin/python3"]
LABEL ai.backend.kernelspec="1"
LABEL ai.backend.features="batch query uid-match user-input"
LABEL ai.backend.runtime-type="python"
LABEL ai.backend.runtime-path="/opt/python/bin/python3"
LABEL ai.backend.base-distro="debian12"
LABEL ai.backend.service-ports="jupyter:http:8080,jupyterlab:http:8090,ttyd:http:7681,sshd:tcp:2200,tensorboard:http:6006"
LABEL ai.backend.resource.min.cpu="1"
LABEL ai.backend.resource.min.mem="256m"

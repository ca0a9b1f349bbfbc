ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV LANG=C.UTF-8
ENV PYTHONUNBUFFERED=1
WORKDIR /home/work
CMD ["/usr/bin/python3"]
LABEL ai.backend.kernelspec="1"
LABEL ai.backend.features="batch query uid-match user-input"
LABEL ai.backend.runtime-type="python"
LABEL ai.backend.runtime-path="/usr/bin/python3"
LABEL ai.backend.base-distro="debian12"
LABEL ai.backend.service-ports="http-server:http:8080"
LABEL ai.backend.resource.min.cpu="1"
LABEL ai.backend.resource.min.mem="64m"
